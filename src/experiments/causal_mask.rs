//! `causal_mask`: with the mask, position i cannot see the future.
//!
//! The causal mask sets s_ij = −∞ for j > i before the softmax, so w_ij = 0 exactly and
//! output_i depends on x_1 … x_i only: ∂output_i/∂x_j = 0 for every j > i (Vaswani et al. 2017,
//! §3.2.3). A model trained on next-token prediction without it reads each answer from the next
//! position: teacher-forced loss falls far below what the data allows, and the model is useless
//! when it must generate, where the future does not exist yet.

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfig;
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, to_host};
use crate::lab::model::{ModelConfig, TinyTransformer};
use crate::lab::tasks::{Task, TaskConfig, TaskKind};
use crate::lab::train::TrainConfig;
use crate::output::plot::Heatmap;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{Invalid, RunConfig, Validate, at_least, experiment_config, validate_in};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{Variant, compare};
use crate::util::interrupt;
use crate::util::rng::HostRng;

/// `configs/causal_mask.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CausalMaskConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub jacobian: JacobianConfig,
    /// Must be `next-token-shift`: next-token prediction whose second half follows from the first.
    pub task: TaskConfig,
    /// The trained model; its `causal` is set to true and false in turn.
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Prompts generated from, per seed.
    pub generate: usize,
}

/// Part A: the Jacobian of an untrained block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JacobianConfig {
    pub n_tokens: usize,
    pub d_model: usize,
    pub n_heads: usize,
}

impl Validate for CausalMaskConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        at_least("jacobian.n_tokens", self.jacobian.n_tokens, 2)?;
        validate_in(
            "jacobian",
            &ModelConfig::new(self.jacobian.d_model, self.jacobian.n_heads),
        )?;
        validate_in("task", &self.task)?;
        if self.task.kind != TaskKind::NextTokenShift {
            return Err(Invalid::new(
                "task.kind",
                format!(
                    "must be next-token-shift (next-token prediction that can be generated), got {}",
                    self.task.kind
                ),
            ));
        }
        validate_in("train", &self.train)?;
        at_least("generate", self.generate, 1)?;
        for causal in [true, false] {
            validate_in("model", &self.model_with(causal))?;
        }
        Ok(())
    }
}

experiment_config!(CausalMaskConfig);

impl CausalMaskConfig {
    fn model_with(&self, causal: bool) -> ModelConfig {
        ModelConfig {
            causal,
            ..self.model.clone()
        }
    }
}

/// `[n, n]`: entry (i, j) is ‖∂output_i/∂x_j‖_F for an untrained block on x ~ N(0, 1).
/// `device` must have autodiff.
///
/// One backward pass per output position: the input is repeated d_model times in the batch and
/// copy c keeps only output coordinate c, so the gradient of copy c is row c of the Jacobian.
pub fn jacobian_norms(
    config: &JacobianConfig,
    causal: bool,
    seed: u64,
    device: &Device,
) -> Result<Vec<Vec<f64>>, RunError> {
    let (n, d) = (config.n_tokens, config.d_model);
    let block = AttentionConfig::new(d, config.n_heads)
        .with_causal(causal)
        .with_seed(seed)
        .init(device)?;
    let x = HostRng::new(seed ^ 0x7AC0_B1A4).normal_vec(n * d, 1.0);
    let copies: Vec<f32> = (0..d).flat_map(|_| x.iter().copied()).collect();
    let eye = Tensor::<2>::eye(d, device); // [d, d]
    let mut norms = Vec::with_capacity(n);
    for i in 0..n {
        // One backward pass per position: long for a large n, and no training loop to check.
        interrupt::check()?;
        let leaf = Tensor::<3>::from_data(TensorData::new(copies.clone(), [d, n, d]), device)
            .require_grad(); // [d copies, n, d_model]
        let out = block.forward(leaf.clone()).context; // [d copies, n, d_model]
        let row = out.slice([0..d, i..i + 1, 0..d]).reshape([d, d]); // [d copies, d_model]
        let grads = (row * eye.clone()).sum().backward();
        let grad = leaf.grad(&grads).expect("x has a gradient"); // [d copies, n, d_model]
        let per_j = grad.powf_scalar(2.0).sum_dim(2).sum_dim(0).sqrt(); // [1, n, 1]
        norms.push(to_host(per_j).into_iter().map(f64::from).collect());
    }
    Ok(norms)
}

/// Greedy free-running generation of the second half of held-out `next-token-shift` sequences
/// (never trained on) from their prompt x₁ … x_m SEP; the fraction of generated tokens equal to
/// y₁ … y_m.
pub fn generation_accuracy(
    model: &TinyTransformer,
    task: &Task,
    prompts: usize,
    seed: u64,
    device: &Device,
) -> f64 {
    let m = task.length();
    let batch = task.held_out_batch(prompts, &mut HostRng::new(seed ^ 0x6E4E_4A7E));
    let width = task.seq_len();
    let mut rows: Vec<Vec<i64>> = batch
        .tokens
        .chunks(width)
        .map(|r| r[..=m].to_vec())
        .collect();
    for _ in 0..m {
        let len = rows[0].len();
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(flat, [prompts, len]), device); // [prompts, len]
        let next = model.forward(tokens, 1).logits.argmax(1); // [prompts, 1]
        let next = next
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("int tensor");
        for (row, t) in rows.iter_mut().zip(next) {
            row.push(t);
        }
    }
    let right = rows
        .iter()
        .zip(batch.tokens.chunks(width))
        .map(|(row, truth)| {
            (0..m)
                .filter(|&p| row[m + 1 + p] == truth[m + 1 + p])
                .count()
        })
        .sum::<usize>();
    right as f64 / (prompts * m) as f64
}

/// The experiment.
pub struct CausalMask;

impl Experiment for CausalMask {
    const NAME: &'static str = "causal_mask";
    const TITLE: &'static str = "with the causal mask, position i cannot see the future";
    const CLAIM: &'static str = "The seed lesson claims that the causal mask stops position i from \
        seeing positions after it. Part A computes the Jacobian ‖∂output_i/∂x_j‖ of an untrained \
        block with and without the mask. Part B trains next-token prediction (the second half of \
        each sequence is the first shifted by one symbol) with and without the mask, and compares the \
        teacher-forced loss with free-running generation, where the model must produce the \
        second half from its own outputs.";
    type Config = CausalMaskConfig;

    fn footprint(config: &CausalMaskConfig) -> Footprint {
        let j = &config.jacobian;
        // The Jacobian's batch holds one copy of the input per output coordinate.
        let part_a = footprint::block("Part A", j.d_model, j.n_heads, j.d_model, j.n_tokens);
        let batch = config.train.batch_size.max(config.generate);
        part_a.max(footprint::training_on(&config.model, &config.task, batch))
    }

    fn work(config: &CausalMaskConfig) -> u64 {
        (2 + 2 * config.run.seeds * config.train.steps) as u64
    }

    fn run(config: &CausalMaskConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        part_a(config, notebook)?;
        part_b(config, notebook)
    }
}

/// One mask's Jacobian norms ‖∂output_i/∂x_j‖_F, and their extremes.
struct Jacobian {
    name: &'static str,
    norms: Vec<Vec<f64>>,
    /// The largest and smallest entry with j > i (the future), and the smallest with j ≤ i.
    future_max: f64,
    future_min: f64,
    past_min: f64,
}

/// Part A: the Jacobian of an untrained block with and without the mask; show, summarise,
/// judge.
fn part_a(config: &CausalMaskConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let jacobians = measure_jacobians(config, notebook)?;
    show_jacobians(config, &jacobians, notebook)?;
    let [causal, none] = &jacobians;
    notebook.summarize(
        "jacobian",
        serde_json::json!({
            "causal": {"future_max": causal.future_max, "past_min": causal.past_min},
            "none": {"future_min": none.future_min, "past_min": none.past_min},
        }),
    );
    notebook.verdict(Verdict::new(
        "with the mask, ∂output_i/∂x_j is exactly 0 for every j > i; without it, it is not",
        causal.future_max == 0.0 && none.future_min > 1e-6 && causal.past_min > 1e-6,
        format!(
            "largest future entry with the mask: {:.1e}; smallest future entry without it: {:.2e}; smallest past entry with the mask: {:.2e}",
            causal.future_max, none.future_min, causal.past_min
        ),
    ));
    Ok(())
}

/// The Jacobian with the causal mask, then without.
fn measure_jacobians(
    config: &CausalMaskConfig,
    notebook: &mut Notebook,
) -> Result<[Jacobian; 2], RunError> {
    let mut one = |causal: bool| -> Result<Jacobian, RunError> {
        let name = if causal { "causal" } else { "none" };
        notebook.status(format!("jacobian: mask={name}"));
        let norms = jacobian_norms(
            &config.jacobian,
            causal,
            config.run.seed,
            &notebook.autodiff,
        )?;
        let pick = |future: bool| {
            norms
                .iter()
                .enumerate()
                .flat_map(|(i, row)| {
                    row.iter()
                        .enumerate()
                        .filter(move |(j, _)| (*j > i) == future)
                        .map(|(_, &v)| v)
                })
                .collect::<Vec<_>>()
        };
        let (ahead, behind) = (pick(true), pick(false));
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        for (i, row) in norms.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                notebook.metric(
                    MetricRow::new(
                        "jacobian",
                        &format!("mask={name}"),
                        &format!("d_out{i}_d_x{j}"),
                        v,
                    )
                    .seed(config.run.seed),
                );
            }
        }
        notebook.advance(1);
        Ok(Jacobian {
            name,
            future_max: max(&ahead),
            future_min: min(&ahead),
            past_min: min(&behind),
            norms,
        })
    };
    Ok([one(true)?, one(false)?])
}

fn show_jacobians(
    config: &CausalMaskConfig,
    jacobians: &[Jacobian; 2],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let n = config.jacobian.n_tokens;
    let mut table = Table::new(
        format!(
            "Part A: ‖∂output_i/∂x_j‖_F of an untrained block ({n} tokens, d_model {}, {} heads)",
            config.jacobian.d_model, config.jacobian.n_heads
        ),
        &[
            "mask",
            "largest, j > i (future)",
            "smallest, j > i (future)",
            "smallest, j ≤ i (past)",
        ],
    );
    for jacobian in jacobians {
        let name = jacobian.name;
        table.row(vec![
            name.into(),
            format!("{:.3e}", jacobian.future_max),
            format!("{:.3e}", jacobian.future_min),
            format!("{:.3e}", jacobian.past_min),
        ]);
        notebook.plot(
            &format!("jacobian_{name}"),
            &format!("‖∂output_i/∂x_j‖, mask = {name}"),
            Heatmap::new(
                format!("‖∂out_i/∂x_j‖, mask = {name}"),
                "output position i",
                "input position j",
                jacobian.norms.clone(),
            )
            .to_svg(),
        )?;
    }
    notebook.table(table);
    Ok(())
}

/// Part B: next-token training with and without the mask (compared side by side), then free
/// running generation; show, summarise, judge.
fn part_b(config: &CausalMaskConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let task = Task::new(config.task.clone())?;
    let seeds = config.run.seed_list();
    let (m, symbols) = (config.task.length, config.task.symbols);
    let variants = vec![
        ("causal mask".to_string(), config.model_with(true)),
        ("no mask".to_string(), config.model_with(false)),
    ];
    let trained = compare(
        notebook,
        "train",
        "Part B: next-token training",
        &variants,
        &task,
        &config.train,
        &seeds,
    )?;
    let generated = measure_generation(config, &task, &variants, &trained, notebook);
    // A model that sees only the past cannot predict x₂ … x_m: (m − 1) of the 2m + 1 targets
    // carry ln(symbols) nats each, whatever the model.
    let floor = (m - 1) as f64 * (symbols as f64).ln() / (2 * m + 1) as f64;
    let chance = 1.0 / symbols as f64;
    let mut table = Table::new(
        format!(
            "Part B: teacher-forced loss vs free-running generation ({} prompts per seed; a past-only model's loss floor is {floor:.3})",
            config.generate
        ),
        &[
            "model",
            "teacher-forced final loss",
            "free-running accuracy (second half)",
            "chance",
        ],
    );
    for ((v, (name, _)), acc) in trained.iter().zip(&variants).zip(&generated) {
        table.row(vec![
            name.clone(),
            format!("{}", v.loss),
            format!("{acc}"),
            format!("{chance:.3}"),
        ]);
    }
    notebook.table(table);
    notebook.summarize(
        "generation",
        serde_json::json!({"loss_floor": floor, "causal": generated[0], "no_mask": generated[1], "chance": chance}),
    );
    let (masked, open) = (&trained[0], &trained[1]);
    notebook.verdict(Verdict::new(
        "without the mask, teacher-forced loss falls far lower: the model copies the future",
        open.loss.mean < 0.5 * masked.loss.mean && open.loss.mean < 0.5 * floor,
        format!(
            "final teacher-forced loss: no mask {}, causal mask {}; a model that sees only the past cannot go below {floor:.3}",
            open.loss, masked.loss
        ),
    ));
    notebook.verdict(Verdict::new(
        "in free-running generation the unmasked model fails while the masked one does not",
        generated[0].mean >= 0.8 && generated[1].mean < generated[0].mean - 0.5,
        format!(
            "accuracy generating the second half from its own outputs: causal mask {}, no mask {} (chance {chance:.3}; does not fail = at least 0.8; fails = more than 0.5 below it)",
            generated[0], generated[1]
        ),
    ));
    Ok(())
}

/// Each variant's accuracy generating the second half from its own outputs, over seeds.
fn measure_generation(
    config: &CausalMaskConfig,
    task: &Task,
    variants: &[(String, ModelConfig)],
    trained: &[Variant],
    notebook: &mut Notebook,
) -> Vec<Spread> {
    let seeds = config.run.seed_list();
    let mut generated = Vec::new();
    for (v, (name, _)) in trained.iter().zip(variants) {
        notebook.status(format!("generating: {name}"));
        let accs: Vec<f64> = v
            .runs
            .runs
            .iter()
            .zip(&seeds)
            .map(|(run, &seed)| {
                let acc = generation_accuracy(
                    &run.model.valid(),
                    task,
                    config.generate,
                    seed,
                    &notebook.device,
                );
                notebook.metric(
                    MetricRow::new("generate", name, "free_running_accuracy", acc).seed(seed),
                );
                acc
            })
            .collect();
        generated.push(Spread::of(&accs));
    }
    generated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batched_jacobian_matches_one_backward_per_coordinate() {
        let device = Device::flex().autodiff();
        let c = JacobianConfig {
            n_tokens: 4,
            d_model: 8,
            n_heads: 2,
        };
        let masked = jacobian_norms(&c, true, 3, &device).unwrap();
        for (i, row) in masked.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!(if j > i { v == 0.0 } else { v > 0.0 }, "({i}, {j}) = {v}");
            }
        }
        // Row i = 1 of the unmasked Jacobian, one backward pass per output coordinate.
        let open = jacobian_norms(&c, false, 3, &device).unwrap();
        let block = AttentionConfig::new(8, 2)
            .with_seed(3)
            .init(&device)
            .unwrap();
        let x = HostRng::new(3 ^ 0x7AC0_B1A4).normal_vec(4 * 8, 1.0);
        let mut squares = [0.0f64; 4];
        for coordinate in 0..8 {
            let leaf = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, 4, 8]), &device)
                .require_grad();
            let out = block.forward(leaf.clone()).context;
            let grads = out
                .slice([0..1, 1..2, coordinate..coordinate + 1])
                .sum()
                .backward();
            let g = to_host(leaf.grad(&grads).unwrap()); // [1·4·8]
            for (j, s) in squares.iter_mut().enumerate() {
                *s += g[j * 8..(j + 1) * 8]
                    .iter()
                    .map(|v| f64::from(v * v))
                    .sum::<f64>();
            }
        }
        for j in 0..4 {
            let direct = squares[j].sqrt();
            assert!(
                (open[1][j] - direct).abs() < 1e-4 * direct.max(1.0),
                "{j}: {} vs {direct}",
                open[1][j]
            );
        }
    }
}
