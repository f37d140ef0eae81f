//! `length_generalization`: which positional encoding lets a causal transformer work on sequences
//! longer than it was trained on.
//!
//! Kazemnejad et al. 2023 ("The Impact of Positional Encoding on Length Generalization in
//! Transformers") trained decoder-only models on short sequences and tested them on longer ones:
//! no positional encoding at all (NoPE; the causal mask alone lets a model infer positions)
//! generalised better than absolute encodings (sinusoidal, learned), and better than rotary and
//! ALiBi (Press et al. 2022, "Train Short, Test Long"), which was built for this. Here the same
//! small causal model is trained with each encoding on lengths ≤ L only, and tested on held-out
//! sequences of L, 1.5 L, 2 L and 3 L.

use serde::{Deserialize, Serialize};

use crate::block::positional::PositionalKind;
use crate::lab::evaluate::{SeedRuns, eval_batch, held_out_accuracy};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::Spread;
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig, TaskKind};
use crate::lab::train::TrainConfig;
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, increasing, non_empty, positive,
    validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{keep_models, run_seeds};

/// `configs/length_generalization.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// The positional encodings compared.
    pub encodings: Vec<PositionalKind>,
    /// Evaluation lengths as multiples of `tasks.length`, increasing; 2 must be among them (the
    /// verdicts read 2 L).
    pub eval_factors: Vec<f64>,
    /// Held-out sequences per evaluation length.
    pub eval_size: usize,
    pub tasks: LengthTasks,
    /// The model: causal; `positional` and `max_len` are set by the experiment.
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// The tasks, and the lengths trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthTasks {
    pub kinds: Vec<TaskKind>,
    /// L: the longest training length.
    pub length: usize,
    /// Training draws each batch's length uniformly from `min_length`…`length`.
    pub min_length: usize,
    pub symbols: usize,
}

impl LengthConfig {
    /// The evaluation lengths, rounded.
    pub fn eval_lengths(&self) -> Vec<usize> {
        self.eval_factors
            .iter()
            .map(|f| (f * self.tasks.length as f64).round() as usize)
            .collect()
    }

    fn task(&self, kind: TaskKind, length: usize) -> Result<Task, crate::lab::tasks::TaskError> {
        Task::new(TaskConfig::new(kind, length, self.tasks.symbols))
    }

    /// The training mixture of `kind`: one task per length in `min_length`…`length`.
    fn training(&self, kind: TaskKind) -> Result<Vec<Task>, crate::lab::tasks::TaskError> {
        (self.tasks.min_length..=self.tasks.length)
            .map(|l| self.task(kind, l))
            .collect()
    }

    /// The model with `encoding`, with room for the longest evaluation.
    fn model_with(&self, encoding: PositionalKind, kind: TaskKind) -> ModelConfig {
        let longest = self
            .eval_lengths()
            .into_iter()
            .max()
            .unwrap_or(self.tasks.length);
        ModelConfig {
            positional: encoding,
            max_len: self.task(kind, longest).ok().map(|t| t.seq_len()),
            ..self.model.clone()
        }
    }
}

impl Validate for LengthConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("encodings", &self.encodings)?;
        non_empty("tasks.kinds", &self.tasks.kinds)?;
        at_least("tasks.min_length", self.tasks.min_length, 1)?;
        if self.tasks.min_length > self.tasks.length {
            return Err(Invalid::new(
                "tasks.min_length",
                format!(
                    "{} is more than tasks.length = {}",
                    self.tasks.min_length, self.tasks.length
                ),
            ));
        }
        non_empty("eval_factors", &self.eval_factors)?;
        increasing("eval_factors", &self.eval_factors)?;
        for &f in &self.eval_factors {
            positive("eval_factors", f)?;
            if f > 16.0 {
                return Err(Invalid::new(
                    "eval_factors",
                    format!("{f} is more than 16 × L"),
                ));
            }
        }
        if !self.eval_factors.contains(&2.0) {
            return Err(Invalid::new(
                "eval_factors",
                "must include 2.0: the verdicts compare the encodings at 2 L",
            ));
        }
        at_least("eval_size", self.eval_size, 1)?;
        if !self.model.causal {
            return Err(Invalid::new(
                "model.causal",
                "must be true: NoPE infers positions from the causal mask (a decoder, as in the paper)",
            ));
        }
        if self.model.positional != PositionalKind::None || self.model.max_len.is_some() {
            return Err(Invalid::new(
                if self.model.max_len.is_some() {
                    "model.max_len"
                } else {
                    "model.positional"
                },
                "is set by the experiment (from encodings and the longest evaluation); leave it out",
            ));
        }
        validate_in("train", &self.train)?;
        for &kind in &self.tasks.kinds {
            for length in [self.tasks.min_length, self.tasks.length]
                .into_iter()
                .chain(self.eval_lengths())
            {
                if length == 0 {
                    return Err(Invalid::new("eval_factors", "a factor rounds to length 0"));
                }
                validate_in("tasks", &TaskConfig::new(kind, length, self.tasks.symbols))?;
            }
            for &encoding in &self.encodings {
                validate_in("model", &self.model_with(encoding, kind))?;
            }
        }
        Ok(())
    }
}

experiment_config!(LengthConfig);

/// Accuracy at L counts as "learned" from here on: a length test of a model that never fit its
/// training lengths says nothing.
pub const LEARNED: f64 = 0.9;

/// One (task, encoding): held-out per-token accuracy at each evaluation length, over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub task: TaskKind,
    pub encoding: PositionalKind,
    /// (length, accuracy over seeds).
    pub points: Vec<(usize, Spread)>,
}

impl Curve {
    fn at(&self, length: usize) -> f64 {
        self.points
            .iter()
            .find(|(l, _)| *l == length)
            .map_or(f64::NAN, |(_, a)| a.mean)
    }
}

/// The experiment.
pub struct LengthGeneralization;

impl Experiment for LengthGeneralization {
    const NAME: &'static str = "length_generalization";
    const TITLE: &'static str =
        "which positional encoding lets a causal model work on longer sequences than it trained on";
    const CLAIM: &'static str = "Kazemnejad et al. 2023 claim that a causal decoder with no \
        positional encoding (NoPE) generalises to sequences longer than its training ones better \
        than absolute encodings (sinusoidal, learned), and better than rotary and ALiBi. A small \
        causal transformer is trained with each encoding (Adam) on copy and reverse at lengths up \
        to L only, and its per-token accuracy is measured on held-out sequences of L, 1.5 L, 2 L \
        and 3 L.";
    type Config = LengthConfig;

    fn footprint(config: &LengthConfig) -> Footprint {
        let longest = config
            .eval_lengths()
            .into_iter()
            .max()
            .unwrap_or(config.tasks.length);
        let kind = config
            .tasks
            .kinds
            .first()
            .copied()
            .unwrap_or(TaskKind::Copy);
        let batch = config.train.batch_size.max(config.eval_size);
        footprint::training_on(
            &config.model_with(PositionalKind::Learned, kind),
            &TaskConfig::new(kind, longest, config.tasks.symbols),
            batch,
        )
    }

    fn work(config: &LengthConfig) -> u64 {
        (config.tasks.kinds.len() * config.encodings.len() * config.run.seeds * config.train.steps)
            as u64
    }

    fn run(config: &LengthConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let seeds = config.run.seed_list();
        let lengths = config.eval_lengths();
        let mut curves = Vec::new();
        for &kind in &config.tasks.kinds {
            let training = config.training(kind)?;
            // Held-out batches per length, from their own stream, never trained on.
            let held_out: Vec<(usize, Task, crate::lab::tasks::Batch)> = lengths
                .iter()
                .map(|&l| {
                    let task = config.task(kind, l)?;
                    let batch = eval_batch(&task, config.eval_size, config.run.seed ^ l as u64);
                    Ok((l, task, batch))
                })
                .collect::<Result<_, crate::lab::tasks::TaskError>>()?;
            for &encoding in &config.encodings {
                let label = format!("{kind},{encoding}");
                let model = config.model_with(encoding, kind);
                let runs: SeedRuns = run_seeds(
                    notebook,
                    "train",
                    &label,
                    &model,
                    &training,
                    &config.train,
                    &seeds,
                )?;
                let longest_trained = training.last().expect("min_length ≤ length");
                keep_models(
                    notebook,
                    "train",
                    &label,
                    &model,
                    longest_trained,
                    &seeds,
                    &runs,
                )?;
                let mut points = Vec::new();
                for (l, task, batch) in &held_out {
                    let per_seed: Vec<f64> = runs
                        .runs
                        .iter()
                        .map(|r| held_out_accuracy(r, task, batch, &notebook.device))
                        .collect();
                    for (&seed, acc) in seeds.iter().zip(&per_seed) {
                        notebook.metric(
                            MetricRow::new("held_out", &label, &format!("accuracy.len{l}"), *acc)
                                .seed(seed),
                        );
                    }
                    points.push((*l, Spread::of(&per_seed)));
                }
                curves.push(Curve {
                    task: kind,
                    encoding,
                    points,
                });
            }
        }
        report(config, &curves, notebook)
    }
}

/// Whether `encoding` reaches [`LEARNED`] at `length` on every task: fitting is judged per task,
/// since 1.0 on copy does not make up for 0.8 on reverse.
fn fits_every_task(curves: &[Curve], encoding: PositionalKind, length: usize) -> bool {
    curves
        .iter()
        .filter(|c| c.encoding == encoding)
        .all(|c| c.at(length) >= LEARNED)
}

/// Show, judge, summarise.
fn report(
    config: &LengthConfig,
    curves: &[Curve],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    show(config, curves, notebook)?;
    judge(config, curves, notebook);
    summarise(config, curves, notebook);
    Ok(())
}

/// Accuracy per task, encoding and length, and against the length per task.
fn show(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) -> Result<(), RunError> {
    let (l, l2) = (config.tasks.length, 2 * config.tasks.length);
    let lengths = config.eval_lengths();
    let mut header = vec!["task".to_string(), "encoding".into()];
    header.extend(lengths.iter().map(|n| format!("len {n}")));
    header.push(format!("drop at {l2}"));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "Held-out per-token accuracy ({} sequences per length, mean ± std over {} seed(s)); trained on lengths {}…{l}",
            config.eval_size, config.run.seeds, config.tasks.min_length
        ),
        &header,
    );
    for c in curves {
        let mut row = vec![c.task.to_string(), c.encoding.to_string()];
        row.extend(c.points.iter().map(|(_, a)| format!("{a}")));
        row.push(format!("{:+.3}", c.at(l2) - c.at(l)));
        table.row(row);
    }
    notebook.table(table);
    for &kind in &config.tasks.kinds {
        let mut chart = LineChart::new(
            format!("{kind}: held-out accuracy vs length (trained on ≤ {l})"),
            "sequence length (symbols)",
            "per-token accuracy",
        );
        for c in curves.iter().filter(|c| c.task == kind) {
            chart = chart.line_with_errors(
                c.encoding.to_string(),
                c.points.iter().map(|(n, a)| (*n as f64, a.mean)).collect(),
                c.points.iter().map(|(_, a)| (a.min, a.max)).collect(),
            );
        }
        notebook.plot(
            &format!("accuracy_vs_length_{kind}"),
            &format!("{kind}: accuracy vs evaluation length (bars: min–max over seeds)"),
            chart.to_svg(),
        )?;
    }
    Ok(())
}

/// Every encoding fits the training lengths; NoPE against the absolute, then the relative
/// encodings at twice that length, judged only between models that fit.
fn judge(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) {
    let (l, l2) = (config.tasks.length, 2 * config.tasks.length);
    let mean_at = |encoding, length| mean_over_tasks(curves, encoding, length);
    let fits = |encoding: PositionalKind| fits_every_task(curves, encoding, l);
    let encodings = &config.encodings;
    let per_task = |encoding: PositionalKind| {
        curves
            .iter()
            .filter(|c| c.encoding == encoding)
            .map(|c| format!("{} {:.3}", c.task, c.at(l)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    notebook.verdict(Verdict::new(
        format!("every encoding fits the training lengths (accuracy at L = {l} ≥ {LEARNED} on every task)"),
        encodings.iter().all(|&e| fits(e)),
        format!(
            "at {l}: {}",
            encodings
                .iter()
                .map(|&e| format!("{e} {}", per_task(e)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    let ranking = ranked(config, curves)
        .iter()
        .map(|(e, a)| format!("{e} {a:.3}"))
        .collect::<Vec<_>>()
        .join(" > ");
    let nope = mean_at(PositionalKind::None, l2);
    let others = |kinds: &[PositionalKind]| -> Vec<(PositionalKind, f64)> {
        kinds
            .iter()
            .filter(|k| encodings.contains(k))
            .map(|&k| (k, mean_at(k, l2)))
            .collect()
    };
    let absolute = others(&[PositionalKind::Sinusoidal, PositionalKind::Learned]);
    let relative = others(&[PositionalKind::Rotary, PositionalKind::Alibi]);
    let has_nope = encodings.contains(&PositionalKind::None);
    let drops = encodings
        .iter()
        .map(|&e| format!("{e} {:+.3}", mean_at(e, l2) - mean_at(e, l)))
        .collect::<Vec<_>>()
        .join(", ");
    // A comparison at 2 L means something only between models that fit L.
    let fit_note = |compared: &[(PositionalKind, f64)]| {
        let unfit: Vec<String> = std::iter::once(PositionalKind::None)
            .chain(compared.iter().map(|(k, _)| *k))
            .filter(|&k| encodings.contains(&k) && !fits(k))
            .map(|k| format!("{k} ({})", per_task(k)))
            .collect();
        if unfit.is_empty() {
            String::new()
        } else {
            format!(
                "; not judged, because below {LEARNED} at L = {l} on some task: {}",
                unfit.join(", ")
            )
        }
    };
    let nope_beats = |claim: String, compared: &[(PositionalKind, f64)], evidence: String| {
        let note = fit_note(compared);
        if !has_nope || compared.is_empty() {
            Verdict::inconclusive(
                claim,
                format!("{evidence}; NoPE or the encodings it is compared with were not run"),
            )
        } else if !note.is_empty() {
            Verdict::inconclusive(claim, format!("{evidence}{note}"))
        } else {
            Verdict::new(claim, compared.iter().all(|(_, a)| nope > *a), evidence)
        }
    };
    notebook.verdict(nope_beats(
        format!("NoPE generalises better than the absolute encodings: higher accuracy at 2 L = {l2} than sinusoidal and learned"),
        &absolute,
        format!("at {l2}, mean over tasks: {ranking}; drop from {l} to {l2}: {drops}"),
    ));
    notebook.verdict(nope_beats(
        format!("NoPE also generalises better than rotary and ALiBi at 2 L = {l2}, as the paper ranked them"),
        &relative,
        format!("at {l2}: {ranking}"),
    ));
}

/// The accuracy of `encoding` at `length`, averaged over the tasks.
fn mean_over_tasks(curves: &[Curve], encoding: PositionalKind, length: usize) -> f64 {
    let v: Vec<f64> = curves
        .iter()
        .filter(|c| c.encoding == encoding)
        .map(|c| c.at(length))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The encodings ranked by their mean accuracy over the tasks at 2 L, best first.
fn ranked(config: &LengthConfig, curves: &[Curve]) -> Vec<(PositionalKind, f64)> {
    let l2 = 2 * config.tasks.length;
    let mut ranked: Vec<(PositionalKind, f64)> = config
        .encodings
        .iter()
        .map(|&e| (e, mean_over_tasks(curves, e, l2)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

/// The curves, the ranking at 2 L and the evaluation size, for `summary.json`.
fn summarise(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) {
    notebook.summarize("curves", curves);
    notebook.summarize(
        "ranking_at_2L",
        ranked(config, curves)
            .iter()
            .map(|(e, a)| (e.to_string(), *a))
            .collect::<Vec<_>>(),
    );
    notebook.summarize("eval_size", config.eval_size);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LengthConfig {
        toml::from_str(&std::fs::read_to_string("configs/length_generalization.toml").unwrap())
            .unwrap()
    }

    #[test]
    fn lengths_and_room_follow_the_config() {
        let config = config();
        config.validate().unwrap();
        let l = config.tasks.length;
        assert_eq!(config.eval_lengths(), vec![l, l * 3 / 2, 2 * l, 3 * l]);
        let model = config.model_with(PositionalKind::Learned, TaskKind::Copy);
        assert_eq!(
            model.max_len,
            Some(2 * 3 * l),
            "copy of 3 L symbols is 6 L tokens"
        );
        let training = config.training(TaskKind::Reverse).unwrap();
        assert_eq!(training.len(), l - config.tasks.min_length + 1);
    }

    #[test]
    fn an_encoding_fits_only_when_it_fits_every_task() {
        let curve = |task, accuracy| Curve {
            task,
            encoding: PositionalKind::Sinusoidal,
            points: vec![(8, Spread::of(&[accuracy]))],
        };
        // A mean of 0.9 over the tasks, but reverse is not fit.
        let curves = [curve(TaskKind::Copy, 1.0), curve(TaskKind::Reverse, 0.8)];
        assert!(!fits_every_task(&curves, PositionalKind::Sinusoidal, 8));
        let curves = [curve(TaskKind::Copy, 0.95), curve(TaskKind::Reverse, 0.9)];
        assert!(fits_every_task(&curves, PositionalKind::Sinusoidal, 8));
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        let mut bad = config();
        bad.model.causal = false;
        assert_eq!(bad.validate().unwrap_err().key, "model.causal");
        let mut bad = config();
        bad.eval_factors = vec![1.0, 1.5];
        assert_eq!(bad.validate().unwrap_err().key, "eval_factors");
        let mut bad = config();
        bad.tasks.min_length = bad.tasks.length + 1;
        assert_eq!(bad.validate().unwrap_err().key, "tasks.min_length");
        let mut bad = config();
        bad.model.positional = PositionalKind::Rotary;
        assert_eq!(bad.validate().unwrap_err().key, "model.positional");
    }
}
