//! `no_projections`: why attention needs separate Q, K and V projections.
//!
//! With Q = K = V = X, the score of a token with itself is x_i·x_i/√d = ‖x_i‖²/√d ≈ √d for
//! N(0, 1) embeddings, while its score with another token is x_i·x_j/√d ~ N(0, 1). The diagonal
//! therefore wins, more so as d_model grows: each token attends mostly to itself. Learned
//! projections W_Q ≠ W_K make q_i·k_i no more special than q_i·k_j (Vaswani et al. 2017, §3.2).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfig;
use crate::lab::evaluate::{eval_batch, example_batch, trained_weights};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, to_host};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig};
use crate::lab::train::TrainConfig;
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, increasing, non_empty, validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{Variant, compare, weights_heatmap};
use crate::util::rng::HostRng;

/// `configs/no_projections.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoProjectionsConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub diagonal: DiagonalSweep,
    pub task: TaskConfig,
    /// The trained model; its `projections` is set to true and false in turn.
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// Part A: diagonal mass at initialisation over d_model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagonalSweep {
    pub d_model: Vec<usize>,
    pub n_tokens: usize,
    pub batch: usize,
}

impl Validate for NoProjectionsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("diagonal.d_model", &self.diagonal.d_model)?;
        increasing("diagonal.d_model", &self.diagonal.d_model)?;
        for &d in &self.diagonal.d_model {
            at_least("diagonal.d_model", d, 1)?;
        }
        at_least("diagonal.n_tokens", self.diagonal.n_tokens, 2)?;
        at_least("diagonal.batch", self.diagonal.batch, 1)?;
        validate_in("task", &self.task)?;
        validate_in("train", &self.train)?;
        for projections in [true, false] {
            validate_in("model", &self.model_with(projections))?;
        }
        Ok(())
    }
}

experiment_config!(NoProjectionsConfig);

impl NoProjectionsConfig {
    fn model_with(&self, projections: bool) -> ModelConfig {
        ModelConfig {
            projections,
            ..self.model.clone()
        }
    }
}

/// Mean weight of each query on its own key, Σ_i w_ii / n, averaged over batch and heads, for
/// `weights: [batch, heads, n, n]`. 1/n is uniform attention, 1 attends only to itself.
pub fn diagonal_mass(weights: Tensor<4>) -> f64 {
    let [batch, heads, n, _] = weights.dims();
    let eye = Tensor::<2>::eye(n, &weights.device()).reshape([1, 1, n, n]); // [1, 1, n, n]
    let diagonal = (weights * eye).sum(); // [1]
    f64::from(to_host(diagonal)[0]) / (batch * heads * n) as f64
}

/// Diagonal mass of one untrained head over x ~ N(0, 1): raw (Q = K = V = X) or through
/// random projections.
pub fn init_diagonal_mass(
    d_model: usize,
    projections: bool,
    n: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<f64, RunError> {
    let block = AttentionConfig::new(d_model, 1)
        .with_projections(projections)
        .with_seed(seed)
        .init(device)?;
    let mut rng = HostRng::new(seed ^ (d_model as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let x = rng.normal_tensor([batch, n, d_model], 1.0, device); // [batch, n, d_model]
    Ok(diagonal_mass(block.forward(x).weights()))
}

/// The experiment.
pub struct NoProjections;

impl Experiment for NoProjections {
    const NAME: &'static str = "no_projections";
    const TITLE: &'static str = "without Q/K/V projections each token attends mostly to itself";
    const CLAIM: &'static str = "The seed lesson claims that using the raw embeddings as queries, \
        keys and values (Q = K = V = X) makes each token attend mostly to itself, because x·x is \
        the largest dot product x can have with anything of its norm. Part A measures the mean \
        diagonal weight of an untrained head over d_model, with raw embeddings and with random \
        projections, against uniform attention 1/n. Part B trains a one-layer transformer (Adam) \
        on one-token-per-pair associative recall with and without projections and measures the \
        trained diagonal mass.";
    type Config = NoProjectionsConfig;

    fn footprint(config: &NoProjectionsConfig) -> Footprint {
        let d = &config.diagonal;
        let part_a = d
            .d_model
            .iter()
            .map(|&d_model| footprint::block("Part A", d_model, 1, d.batch, d.n_tokens));
        let part_b = footprint::training_on(&config.model, &config.task, config.train.batch_size);
        Footprint::largest(part_a.chain([part_b]))
    }

    fn work(config: &NoProjectionsConfig) -> u64 {
        (2 * config.diagonal.d_model.len() + 2 * config.run.seeds * config.train.steps) as u64
    }

    fn run(config: &NoProjectionsConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        part_a(config, notebook)?;
        part_b(config, notebook)
    }
}

fn variant_name(projections: bool) -> &'static str {
    if projections {
        "random projections"
    } else {
        "raw embeddings (Q = K = V = X)"
    }
}

/// Part A: the diagonal mass at initialisation per d_model; show, judge, summarise.
fn part_a(config: &NoProjectionsConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let lines = measure_diagonal(config, notebook)?;
    show_diagonal(config, &lines, notebook)?;
    judge_diagonal(config, &lines, notebook);
    let uniform = 1.0 / config.diagonal.n_tokens as f64;
    notebook.summarize(
        "diagonal",
        serde_json::json!({"raw": lines[0], "random_projections": lines[1], "uniform": uniform}),
    );
    Ok(())
}

/// (d_model, mean diagonal weight) without projections (`[0]`) and with random ones (`[1]`).
fn measure_diagonal(
    config: &NoProjectionsConfig,
    notebook: &mut Notebook,
) -> Result<[Vec<(f64, f64)>; 2], RunError> {
    let sweep = &config.diagonal;
    let mut lines: [Vec<(f64, f64)>; 2] = Default::default();
    for &d in &sweep.d_model {
        for (i, projections) in [false, true].into_iter().enumerate() {
            notebook.status(format!(
                "diagonal: d_model={d} {}",
                variant_name(projections)
            ));
            let mass = init_diagonal_mass(
                d,
                projections,
                sweep.n_tokens,
                sweep.batch,
                config.run.seed,
                &notebook.device,
            )?;
            let label = format!("d_model={d} projections={projections}");
            notebook.metric(
                MetricRow::new("diagonal", &label, "diagonal_mass", mass).seed(config.run.seed),
            );
            lines[i].push((d as f64, mass));
            notebook.advance(1);
        }
    }
    Ok(lines)
}

fn show_diagonal(
    config: &NoProjectionsConfig,
    lines: &[Vec<(f64, f64)>; 2],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let sweep = &config.diagonal;
    let uniform = 1.0 / sweep.n_tokens as f64;
    let mut table = Table::new(
        format!(
            "Part A: mean diagonal weight at initialisation, {} tokens (uniform = 1/{} = {uniform:.4})",
            sweep.n_tokens, sweep.n_tokens
        ),
        &["d_model", variant_name(false), variant_name(true)],
    );
    for (&d, (raw, projected)) in sweep.d_model.iter().zip(lines[0].iter().zip(&lines[1])) {
        table.row(vec![
            d.to_string(),
            format!("{:.4}", raw.1),
            format!("{:.4}", projected.1),
        ]);
    }
    notebook.table(table);
    let ds: Vec<f64> = sweep.d_model.iter().map(|&d| d as f64).collect();
    let chart = LineChart::new(
        "Mean diagonal attention weight at initialisation",
        "d_model",
        "mean w_ii",
    )
    .log_x()
    .line(variant_name(false), lines[0].clone())
    .line(variant_name(true), lines[1].clone())
    .reference(
        format!("uniform, 1/{}", sweep.n_tokens),
        ds.iter().map(|&d| (d, uniform)).collect(),
    );
    notebook.plot(
        "diagonal_vs_dmodel",
        "Diagonal mass vs d_model",
        chart.to_svg(),
    )
}

/// Raw embeddings prefer themselves, more so with the width; random projections do not.
fn judge_diagonal(
    config: &NoProjectionsConfig,
    lines: &[Vec<(f64, f64)>; 2],
    notebook: &mut Notebook,
) {
    let sweep = &config.diagonal;
    let uniform = 1.0 / sweep.n_tokens as f64;
    let raw = &lines[0];
    let rising = raw.windows(2).all(|w| w[1].1 >= w[0].1 - 1e-6);
    let (last_d, last_raw) = raw[raw.len() - 1];
    notebook.verdict(Verdict::new(
        "with raw embeddings each token attends mostly to itself, more so as d_model grows",
        rising && last_raw > 0.5 && raw.len() > 1,
        format!(
            "raw diagonal mass {} from d_model {} to {last_d}; rises at every step: {rising}; uniform is {uniform:.4}",
            raw.iter()
                .map(|p| format!("{:.3}", p.1))
                .collect::<Vec<_>>()
                .join(" → "),
            raw[0].0
        ),
    ));
    let worst = lines[1]
        .iter()
        .map(|p| p.1 / uniform)
        .fold(0.0f64, |m, r| m.max(r.max(1.0 / r)));
    notebook.verdict(Verdict::new(
        "random projections remove the self-preference: the diagonal stays near uniform",
        worst < 2.0,
        format!(
            "random-projection diagonal mass stays within {worst:.2}× of 1/{} at every d_model",
            sweep.n_tokens
        ),
    ));
}

/// The two trained variants' names, with projections first.
const NAMES: [&str; 2] = ["learned projections", "no projections (Q = K = V = LN(h))"];

/// Part B: training with and without projections (compared side by side), then the trained
/// diagonal; show, summarise, judge.
fn part_b(config: &NoProjectionsConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let task = Task::new(config.task.clone())?;
    let seeds = config.run.seed_list();
    let variants: Vec<(String, ModelConfig)> = [true, false]
        .into_iter()
        .zip(NAMES)
        .map(|(p, name)| (name.to_string(), config.model_with(p)))
        .collect();
    let trained = compare(
        notebook,
        "train",
        "Part B: training with and without projections",
        &variants,
        &task,
        &config.train,
        &seeds,
    )?;
    let masses = measure_trained_diagonal(config, &task, &trained, notebook);
    show_trained_diagonal(config, &task, &trained, &masses, notebook)?;
    notebook.summarize(
        "trained_diagonal",
        serde_json::json!({"projections": {"all": masses[0].0, "answer_self": masses[0].1},
                           "raw": {"all": masses[1].0, "answer_self": masses[1].1}}),
    );
    let (with, without) = (&trained[0], &trained[1]);
    notebook.verdict(Verdict::new(
        "after training, the model without projections still attends more to itself, and learns recall worse",
        masses[0].1.clearly_below(&masses[1].1) && with.loss.clearly_below(&without.loss),
        format!(
            "answer query's weight on itself: {} with projections vs {} without; final loss {} vs {}, accuracy {} vs {}",
            masses[0].1, masses[1].1, with.loss, without.loss, with.accuracy, without.accuracy
        ),
    ));
    Ok(())
}

/// Per variant, over seeds: the mean diagonal weight of all queries, and the answer query's
/// weight on itself, on 64 held-out sequences.
fn measure_trained_diagonal(
    config: &NoProjectionsConfig,
    task: &Task,
    trained: &[Variant],
    notebook: &mut Notebook,
) -> Vec<(Spread, Spread)> {
    let seeds = config.run.seed_list();
    let eval = eval_batch(task, 64, config.run.seed);
    let mut masses = Vec::new();
    for (v, name) in trained.iter().zip(NAMES) {
        let (mut all, mut answer) = (Vec::new(), Vec::new());
        for (run, &seed) in v.runs.runs.iter().zip(&seeds) {
            let weights = trained_weights(run, task, &eval, &notebook.device); // [64, heads, n, n]
            let [b, h, n, _] = weights.dims();
            all.push(diagonal_mass(weights.clone()));
            let own = weights.slice([0..b, 0..h, n - 1..n, n - 1..n]).mean(); // [1]
            answer.push(f64::from(to_host(own)[0]));
            notebook.metric(
                MetricRow::new("trained", name, "diagonal_mass", all[all.len() - 1]).seed(seed),
            );
            notebook.metric(
                MetricRow::new(
                    "trained",
                    name,
                    "answer_self_weight",
                    answer[answer.len() - 1],
                )
                .seed(seed),
            );
        }
        masses.push((Spread::of(&all), Spread::of(&answer)));
    }
    masses
}

fn show_trained_diagonal(
    config: &NoProjectionsConfig,
    task: &Task,
    trained: &[Variant],
    masses: &[(Spread, Spread)],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let mut table = Table::new(
        "Part B: diagonal mass after training (64 fresh sequences, every seed)",
        &[
            "model",
            "mean w_ii, all queries",
            "answer query's weight on itself",
        ],
    );
    for ((all, answer), name) in masses.iter().zip(NAMES) {
        table.row(vec![
            name.to_string(),
            format!("{all}"),
            format!("{answer}"),
        ]);
    }
    notebook.table(table);
    let example = example_batch(task, config.run.seed);
    for (v, (file, name)) in trained
        .iter()
        .zip([("weights_projections", NAMES[0]), ("weights_raw", NAMES[1])])
    {
        notebook.plot(
            file,
            &format!("Trained weights, {name} (one example)"),
            weights_heatmap(
                format!("{name}: weights after training"),
                trained_weights(&v.runs.runs[0], task, &example, &notebook.device),
            )
            .to_svg(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_mass_of_identity_and_uniform() {
        let device = Device::flex();
        let eye = Tensor::<2>::eye(4, &device).reshape([1, 1, 4, 4]);
        assert!((diagonal_mass(eye) - 1.0).abs() < 1e-6);
        let uniform = Tensor::<4>::full([2, 3, 4, 4], 0.25, &device);
        assert!((diagonal_mass(uniform) - 0.25).abs() < 1e-6);
    }
}
