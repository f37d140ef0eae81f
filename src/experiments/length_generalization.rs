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
//!
//! One step past the paper: Scalable-Softmax (Nakanishi 2025, "Scalable-Softmax Is Superior for
//! Attention") multiplies each query's scores by s·ln n, n the keys it sees, so that its largest
//! weight does not fade as n grows past the training length. NoPE, rotary and ALiBi are also
//! trained with it, and the answer rows' largest weight is measured at every length beside the
//! accuracy.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::block::positional::PositionalKind;
use crate::lab::evaluate::{SeedRuns, eval_batch, held_out_accuracy_and_focus};
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
    /// The positional encodings compared, each with the plain softmax.
    pub encodings: Vec<PositionalKind>,
    /// Encodings also trained with Scalable-Softmax, to compare with their plain twins (which
    /// `encodings` must hold). Default: none.
    #[serde(default)]
    pub ssmax_encodings: Vec<PositionalKind>,
    /// Evaluation lengths as multiples of `tasks.length`, increasing; 2 must be among them (the
    /// verdicts read 2 L).
    pub eval_factors: Vec<f64>,
    /// Held-out sequences per evaluation length.
    pub eval_size: usize,
    pub tasks: LengthTasks,
    /// The model: causal; `positional`, `ssmax` and `max_len` are set by the experiment.
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

    /// Every variant trained: the plain encodings, then those with SSMax.
    pub fn variants(&self) -> Vec<Variant> {
        let plain = self.encodings.iter().map(|&e| Variant::plain(e));
        let ssmax = self.ssmax_encodings.iter().map(|&e| Variant {
            encoding: e,
            ssmax: true,
        });
        plain.chain(ssmax).collect()
    }

    /// The model of `variant`, with room for the longest evaluation.
    fn model_with(&self, variant: Variant, kind: TaskKind) -> ModelConfig {
        let longest = self
            .eval_lengths()
            .into_iter()
            .max()
            .unwrap_or(self.tasks.length);
        ModelConfig {
            positional: variant.encoding,
            ssmax: variant.ssmax,
            max_len: self.task(kind, longest).ok().map(|t| t.seq_len()),
            ..self.model.clone()
        }
    }
}

impl Validate for LengthConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("encodings", &self.encodings)?;
        for (key, list) in [
            ("encodings", &self.encodings),
            ("ssmax_encodings", &self.ssmax_encodings),
        ] {
            if let Some(twice) = list
                .iter()
                .enumerate()
                .find_map(|(i, e)| list[..i].contains(e).then_some(e))
            {
                return Err(Invalid::new(key, format!("{twice} is named twice")));
            }
        }
        if let Some(alone) = self
            .ssmax_encodings
            .iter()
            .find(|e| !self.encodings.contains(e))
        {
            return Err(Invalid::new(
                "ssmax_encodings",
                format!(
                    "{alone} is not in encodings: SSMax is judged against the same encoding with the plain softmax"
                ),
            ));
        }
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
        let set_here = [
            (
                "model.positional",
                self.model.positional != PositionalKind::None,
            ),
            ("model.ssmax", self.model.ssmax),
            ("model.max_len", self.model.max_len.is_some()),
        ];
        if let Some((key, _)) = set_here.iter().find(|(_, set)| *set) {
            return Err(Invalid::new(
                *key,
                "is set by the experiment (from encodings, ssmax_encodings and the longest evaluation); leave it out",
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
            for variant in self.variants() {
                validate_in("model", &self.model_with(variant, kind))?;
            }
        }
        Ok(())
    }
}

experiment_config!(LengthConfig);

/// Accuracy at L counts as "learned" from here on: a length test of a model that never fit its
/// training lengths says nothing.
pub const LEARNED: f64 = 0.9;

/// Attention "fades" when the answer rows' mean largest weight at the longest evaluation is at
/// least this fraction below its value at L, and "holds" when it is less.
pub const FADING: f64 = 0.1;

/// One trained variant: an encoding, with the plain softmax or with SSMax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Variant {
    pub encoding: PositionalKind,
    pub ssmax: bool,
}

impl Variant {
    pub fn plain(encoding: PositionalKind) -> Self {
        Self {
            encoding,
            ssmax: false,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encoding)?;
        if self.ssmax {
            write!(f, "+ssmax")?;
        }
        Ok(())
    }
}

/// One (task, variant) over seeds: held-out per-token accuracy and the answer rows' mean largest
/// attention weight at each evaluation length, and SSMax's learned s.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub task: TaskKind,
    pub variant: Variant,
    /// (length, accuracy over seeds).
    pub points: Vec<(usize, Spread)>,
    /// (length, largest weight over seeds): see [`held_out_accuracy_and_focus`].
    pub focus: Vec<(usize, Spread)>,
    /// SSMax's s after training, the mean over every layer and head, over seeds.
    pub ssmax_s: Option<Spread>,
}

impl Curve {
    fn at(&self, length: usize) -> f64 {
        Self::mean_at(&self.points, length)
    }

    fn focus_at(&self, length: usize) -> f64 {
        Self::mean_at(&self.focus, length)
    }

    /// The accuracy's standard deviation over seeds at `length`.
    fn std_at(&self, length: usize) -> f64 {
        self.points
            .iter()
            .find(|(l, _)| *l == length)
            .map_or(f64::NAN, |(_, a)| a.std)
    }

    fn mean_at(points: &[(usize, Spread)], length: usize) -> f64 {
        points
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
        than absolute encodings (sinusoidal, learned), and better than rotary and ALiBi; \
        Nakanishi 2025 claims that a plain softmax's largest weight fades as the keys grow past \
        the training length, that Scalable-Softmax (scores times s·ln n) keeps it, and that \
        length generalisation improves. A small causal transformer is trained with each encoding \
        (Adam), and NoPE, rotary and ALiBi also with SSMax, on copy and reverse at lengths up to \
        L only, and its per-token accuracy and the answer rows' largest attention weight are \
        measured on held-out sequences of L, 1.5 L, 2 L and 3 L.";
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
            &config.model_with(Variant::plain(PositionalKind::Learned), kind),
            &TaskConfig::new(kind, longest, config.tasks.symbols),
            batch,
        )
    }

    fn work(config: &LengthConfig) -> u64 {
        (config.tasks.kinds.len() * config.variants().len() * config.run.seeds * config.train.steps)
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
            for variant in config.variants() {
                let label = format!("{kind},{variant}");
                let model = config.model_with(variant, kind);
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
                let (mut points, mut focus) = (Vec::new(), Vec::new());
                for (l, task, batch) in &held_out {
                    let (accuracy, largest): (Vec<f64>, Vec<f64>) = runs
                        .runs
                        .iter()
                        .map(|r| held_out_accuracy_and_focus(r, task, batch, &notebook.device))
                        .unzip();
                    for (i, &seed) in seeds.iter().enumerate() {
                        for (name, value) in
                            [("accuracy", accuracy[i]), ("largest_weight", largest[i])]
                        {
                            notebook.metric(
                                MetricRow::new(
                                    "held_out",
                                    &label,
                                    &format!("{name}.len{l}"),
                                    value,
                                )
                                .seed(seed),
                            );
                        }
                    }
                    points.push((*l, Spread::of(&accuracy)));
                    focus.push((*l, Spread::of(&largest)));
                }
                let ssmax_s = variant.ssmax.then(|| {
                    let s: Vec<f64> = runs.runs.iter().map(|r| learned_s(&r.model)).collect();
                    for (&seed, value) in seeds.iter().zip(&s) {
                        notebook
                            .metric(MetricRow::new("train", &label, "ssmax_s", *value).seed(seed));
                    }
                    Spread::of(&s)
                });
                curves.push(Curve {
                    task: kind,
                    variant,
                    points,
                    focus,
                    ssmax_s,
                });
            }
        }
        report(config, &curves, notebook)
    }
}

/// SSMax's s after training, the mean over every block and head (NaN without SSMax).
fn learned_s(model: &crate::lab::model::TinyTransformer) -> f64 {
    let s: Vec<f64> = model
        .blocks
        .iter()
        .filter_map(|b| b.attention.ssmax.as_ref())
        .map(|s| f64::from(s.val().mean().into_scalar::<f32>()))
        .collect();
    s.iter().sum::<f64>() / s.len() as f64
}

/// Whether `variant` reaches [`LEARNED`] at `length` on every task: fitting is judged per task,
/// since 1.0 on copy does not make up for 0.8 on reverse.
fn fits_every_task(curves: &[Curve], variant: Variant, length: usize) -> bool {
    curves
        .iter()
        .filter(|c| c.variant == variant)
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

/// One line per variant of `task` in `curves` that `keep` accepts, with bars from the lowest to
/// the highest seed.
fn chart(
    curves: &[Curve],
    task: TaskKind,
    keep: impl Fn(&Curve) -> bool,
    value: impl Fn(&Curve) -> &[(usize, Spread)],
    titles: [String; 3],
) -> Result<String, crate::output::plot::PlotError> {
    let [title, x, y] = titles;
    let mut chart = LineChart::new(title, x, y);
    for c in curves.iter().filter(|c| c.task == task && keep(c)) {
        let points = value(c);
        chart = chart.line_with_errors(
            c.variant.to_string(),
            points.iter().map(|(n, a)| (*n as f64, a.mean)).collect(),
            points.iter().map(|(_, a)| (a.min, a.max)).collect(),
        );
    }
    chart.to_svg()
}

/// Accuracy and largest weight per task, variant and length, and against the length per task.
fn show(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) -> Result<(), RunError> {
    let (l, l2) = (config.tasks.length, 2 * config.tasks.length);
    let lengths = config.eval_lengths();
    let with_lengths = |first: &[&str], last: &[&str]| -> Vec<String> {
        let mut header: Vec<String> = first.iter().map(|h| h.to_string()).collect();
        header.extend(lengths.iter().map(|n| format!("len {n}")));
        header.extend(last.iter().map(|h| h.to_string()));
        header
    };
    let header = with_lengths(&["task", "variant"], &[&format!("drop at {l2}")]);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "Held-out per-token accuracy ({} sequences per length, mean ± std over {} seed(s)); trained on lengths {}…{l}",
            config.eval_size, config.run.seeds, config.tasks.min_length
        ),
        &header,
    );
    for c in curves {
        let mut row = vec![c.task.to_string(), c.variant.to_string()];
        row.extend(c.points.iter().map(|(_, a)| format!("{a}")));
        row.push(format!("{:+.3}", c.at(l2) - c.at(l)));
        table.row(row);
    }
    notebook.table(table);
    let compared = |c: &Curve| config.ssmax_encodings.contains(&c.variant.encoding);
    if !config.ssmax_encodings.is_empty() {
        let longest = lengths.last().copied().unwrap_or(l);
        let header = with_lengths(
            &["task", "variant"],
            &[&format!("change {l} → {longest}"), "learned s"],
        );
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut table = Table::new(
            format!(
                "The answer rows' largest attention weight (mean over rows, heads and layers; mean ± std over {} seed(s)): 1 is all weight on one key, 1/n spread evenly",
                config.run.seeds
            ),
            &header,
        );
        for c in curves.iter().filter(|c| compared(c)) {
            let mut row = vec![c.task.to_string(), c.variant.to_string()];
            row.extend(c.focus.iter().map(|(_, a)| format!("{a}")));
            row.push(format!(
                "{:+.0}%",
                100.0 * (c.focus_at(longest) / c.focus_at(l) - 1.0)
            ));
            row.push(c.ssmax_s.map_or("—".to_string(), |s| format!("{s}")));
            table.row(row);
        }
        notebook.table(table);
    }
    let length_axis = "sequence length (symbols)".to_string();
    for &kind in &config.tasks.kinds {
        notebook.plot(
            &format!("accuracy_vs_length_{kind}"),
            &format!(
                "{kind}: accuracy vs evaluation length, plain softmax (bars: min–max over seeds)"
            ),
            chart(
                curves,
                kind,
                |c| !c.variant.ssmax,
                |c| &c.points,
                [
                    format!("{kind}: held-out accuracy vs length (trained on ≤ {l})"),
                    length_axis.clone(),
                    "per-token accuracy".into(),
                ],
            ),
        )?;
        if config.ssmax_encodings.is_empty() {
            continue;
        }
        notebook.plot(
            &format!("ssmax_accuracy_vs_length_{kind}"),
            &format!("{kind}: accuracy vs evaluation length, each encoding with and without SSMax (bars: min–max over seeds)"),
            chart(
                curves,
                kind,
                compared,
                |c| &c.points,
                [
                    format!("{kind}: with and without SSMax (trained on ≤ {l})"),
                    length_axis.clone(),
                    "per-token accuracy".into(),
                ],
            ),
        )?;
        notebook.plot(
            &format!("largest_weight_vs_length_{kind}"),
            &format!("{kind}: the answer rows' largest attention weight vs evaluation length, with and without SSMax (bars: min–max over seeds)"),
            chart(
                curves,
                kind,
                compared,
                |c| &c.focus,
                [
                    format!("{kind}: attention fading (trained on ≤ {l})"),
                    length_axis.clone(),
                    "largest weight of an answer row".into(),
                ],
            ),
        )?;
    }
    Ok(())
}

/// The lengths past L, and what "past L" means in a verdict.
fn past(config: &LengthConfig) -> (Vec<usize>, String) {
    let l = config.tasks.length;
    let lengths: Vec<usize> = config
        .eval_lengths()
        .into_iter()
        .filter(|&n| n > l)
        .collect();
    let names = lengths
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    (
        lengths,
        format!("past L (mean over tasks and lengths {names})"),
    )
}

/// Every variant fits the training lengths; NoPE against the absolute, then the relative
/// encodings past L; then, for each encoding trained with SSMax, fading without it, none with
/// it, and the accuracy past L. A comparison is judged only between variants that fit L.
fn judge(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) {
    let l = config.tasks.length;
    let (past_lengths, past_text) = past(config);
    let past_l = |variant: Variant| mean_over(curves, variant, &past_lengths, Curve::at);
    let fits = |variant: Variant| fits_every_task(curves, variant, l);
    let variants = config.variants();
    let per_task = |variant: Variant| {
        curves
            .iter()
            .filter(|c| c.variant == variant)
            .map(|c| format!("{} {:.3}", c.task, c.at(l)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    notebook.verdict(Verdict::new(
        format!("every variant (each encoding, and those with SSMax) fits the training lengths (accuracy at L = {l} ≥ {LEARNED} on every task)"),
        variants.iter().all(|&v| fits(v)),
        format!(
            "at {l}: {}",
            variants
                .iter()
                .map(|&v| format!("{v} {}", per_task(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    // Why a comparison between `compared` cannot be judged, or "" when it can.
    let unfit_note = |compared: &[Variant]| {
        let unfit: Vec<String> = compared
            .iter()
            .filter(|&&v| !fits(v))
            .map(|&v| format!("{v} ({})", per_task(v)))
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
    let ranking = ranked(config, curves)
        .iter()
        .map(|(e, a)| format!("{e} {a:.3}"))
        .collect::<Vec<_>>()
        .join(" > ");
    let at_each = |v: Variant| {
        curves
            .iter()
            .filter(|c| c.variant == v)
            .map(|c| {
                let points = c
                    .points
                    .iter()
                    .filter(|(n, _)| past_lengths.contains(n))
                    .map(|(n, a)| format!("{n}: {a}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{} {}", c.task, points)
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let nope = Variant::plain(PositionalKind::None);
    let nope_beats = |claim: String, others: &[PositionalKind]| {
        let compared: Vec<Variant> = others
            .iter()
            .filter(|e| config.encodings.contains(e))
            .map(|&e| Variant::plain(e))
            .collect();
        let evidence = format!(
            "{past_text}: {ranking}; NoPE at each length, mean ± std over seeds: {}",
            at_each(nope)
        );
        if !config.encodings.contains(&PositionalKind::None) || compared.is_empty() {
            return Verdict::inconclusive(
                claim,
                format!("{evidence}; NoPE or the encodings it is compared with were not run"),
            );
        }
        let all: Vec<Variant> = std::iter::once(nope)
            .chain(compared.iter().copied())
            .collect();
        let note = unfit_note(&all);
        if !note.is_empty() {
            return Verdict::inconclusive(claim, format!("{evidence}{note}"));
        }
        Verdict::new(
            claim,
            compared.iter().all(|&v| past_l(nope) > past_l(v)),
            evidence,
        )
    };
    notebook.verdict(nope_beats(
        format!("NoPE generalises better than the absolute encodings: higher accuracy {past_text} than sinusoidal and learned"),
        &[PositionalKind::Sinusoidal, PositionalKind::Learned],
    ));
    notebook.verdict(nope_beats(
        format!("NoPE also generalises better than rotary and ALiBi {past_text}, as the paper ranked them"),
        &[PositionalKind::Rotary, PositionalKind::Alibi],
    ));
    for &encoding in &config.ssmax_encodings {
        judge_ssmax(config, curves, encoding, notebook, &unfit_note);
    }
}

/// Fading with the plain softmax, none with SSMax, and SSMax's accuracy past L, for `encoding`.
fn judge_ssmax(
    config: &LengthConfig,
    curves: &[Curve],
    encoding: PositionalKind,
    notebook: &mut Notebook,
    unfit_note: &dyn Fn(&[Variant]) -> String,
) {
    let l = config.tasks.length;
    let longest = config.eval_lengths().last().copied().unwrap_or(l);
    let (past_lengths, past_text) = past(config);
    let plain = Variant::plain(encoding);
    let ssmax = Variant {
        encoding,
        ssmax: true,
    };
    let change = |v: Variant| {
        let at = |n| mean_over(curves, v, &[n], Curve::focus_at);
        (at(l), at(longest), at(longest) / at(l) - 1.0)
    };
    let describe = |v: Variant| {
        let (short, long, change) = change(v);
        format!(
            "{v}: {short:.3} at {l} → {long:.3} at {longest} ({:+.0}%)",
            100.0 * change
        )
    };
    let s = curves
        .iter()
        .filter(|c| c.variant == ssmax)
        .filter_map(|c| c.ssmax_s.map(|s| format!("{} {s}", c.task)))
        .collect::<Vec<_>>()
        .join(", ");
    let evidence = format!(
        "the answer rows' largest weight, mean over tasks and seeds: {}; {}; learned s: {s}",
        describe(plain),
        describe(ssmax)
    );
    let judged = |claim: String, compared: &[Variant], holds: bool, evidence: &str| {
        let note = unfit_note(compared);
        if note.is_empty() {
            Verdict::new(claim, holds, evidence)
        } else {
            Verdict::inconclusive(claim, format!("{evidence}{note}"))
        }
    };
    let fade = FADING * 100.0;
    notebook.verdict(judged(
        format!("{encoding} with the plain softmax: attention fades past L, the answer rows' largest weight falls by {fade:.0}% or more from L = {l} to {longest} symbols"),
        &[plain],
        change(plain).2 <= -FADING,
        &evidence,
    ));
    notebook.verdict(judged(
        format!("{encoding} with SSMax: attention does not fade, the answer rows' largest weight falls by less than {fade:.0}% from L = {l} to {longest} symbols"),
        &[ssmax],
        change(ssmax).2 > -FADING,
        &evidence,
    ));
    let past_l = |v: Variant| mean_over(curves, v, &past_lengths, Curve::at);
    // A gain smaller than the seeds' own scatter shows nothing.
    let scatter = |v: Variant| mean_over(curves, v, &past_lengths, Curve::std_at);
    let noise = scatter(plain).max(scatter(ssmax));
    let gain = past_l(ssmax) - past_l(plain);
    notebook.verdict(judged(
        format!("SSMax improves {encoding}'s length generalisation: accuracy {past_text} higher than the plain softmax's by more than the seeds' spread (their std, averaged over tasks and lengths)"),
        &[plain, ssmax],
        gain > noise,
        &format!(
            "{past_text}: {ssmax} {:.3}, {plain} {:.3}, a gain of {gain:+.3} against a spread of {noise:.3}",
            past_l(ssmax),
            past_l(plain)
        ),
    ));
}

/// `value` of `variant` averaged over the tasks and `lengths`.
fn mean_over(
    curves: &[Curve],
    variant: Variant,
    lengths: &[usize],
    value: impl Fn(&Curve, usize) -> f64,
) -> f64 {
    let v: Vec<f64> = curves
        .iter()
        .filter(|c| c.variant == variant)
        .flat_map(|c| lengths.iter().map(|&n| value(c, n)).collect::<Vec<_>>())
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The plain encodings ranked by their mean accuracy past L, best first.
fn ranked(config: &LengthConfig, curves: &[Curve]) -> Vec<(PositionalKind, f64)> {
    let (lengths, _) = past(config);
    let mut ranked: Vec<(PositionalKind, f64)> = config
        .encodings
        .iter()
        .map(|&e| (e, mean_over(curves, Variant::plain(e), &lengths, Curve::at)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

/// The curves, the ranking past L and the evaluation size, for `summary.json`.
fn summarise(config: &LengthConfig, curves: &[Curve], notebook: &mut Notebook) {
    notebook.summarize("curves", curves);
    notebook.summarize(
        "ranking_past_L",
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
        let model = config.model_with(Variant::plain(PositionalKind::Learned), TaskKind::Copy);
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
        let sinusoidal = Variant::plain(PositionalKind::Sinusoidal);
        let curve = |task, accuracy| Curve {
            task,
            variant: sinusoidal,
            points: vec![(8, Spread::of(&[accuracy]))],
            focus: Vec::new(),
            ssmax_s: None,
        };
        // A mean of 0.9 over the tasks, but reverse is not fit.
        let curves = [curve(TaskKind::Copy, 1.0), curve(TaskKind::Reverse, 0.8)];
        assert!(!fits_every_task(&curves, sinusoidal, 8));
        let curves = [curve(TaskKind::Copy, 0.95), curve(TaskKind::Reverse, 0.9)];
        assert!(fits_every_task(&curves, sinusoidal, 8));
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
        let mut bad = config();
        bad.model.ssmax = true;
        assert_eq!(bad.validate().unwrap_err().key, "model.ssmax");
        let mut bad = config();
        bad.encodings.retain(|&e| e != PositionalKind::Alibi);
        assert_eq!(bad.validate().unwrap_err().key, "ssmax_encodings");
        let mut bad = config();
        bad.ssmax_encodings.push(PositionalKind::None);
        assert_eq!(bad.validate().unwrap_err().key, "ssmax_encodings");
    }
}
