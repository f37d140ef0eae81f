//! `induction_heads`: two attention layers form an induction head in a phase change; one layer
//! cannot.
//!
//! An induction head completes [A][B] … [A] → [B]: it attends from the current token to the
//! token that followed its previous occurrence, and copies it (Elhage et al. 2021, "A
//! Mathematical Framework for Transformer Circuits"; Olsson et al. 2022, "In-context Learning and
//! Induction Heads"). It needs two layers: a previous-token head in layer 1 writes "my previous
//! token was A" into each position, and the induction head in layer 2 matches its query A
//! against that (K-composition). Olsson et al. see it form abruptly, early in training, with the
//! in-context-learning score jumping at the same moment.
//!
//! Attention-only models of one and two layers are trained on `repeat-segment` (a segment of
//! random length, repeated to fill the sequence, so no fixed offset finds the previous copy; see
//! [`crate::lab::tasks`]). Every recorded step measures, on that step's fresh batch before its
//! update: the loss on the repeats and on the first copy, the in-context-learning score, and per
//! head the previous-token and prefix-matching scores ([`crate::lab::metrics::InductionMask`]).
//! The phase window is read off the two-layer model's repeat loss: the narrowest span of steps
//! that holds [`InductionConfig::phase_share`] of its whole drop.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::lab::evaluate::{SeedRuns, eval_batch, example_batch};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{InductionMask, Spread, head_matrix};
use crate::lab::model::{ModelConfig, TinyTransformer};
use crate::lab::tasks::{Batch, Task, TaskConfig, TaskKind};
use crate::lab::train::{StepRecord, TrainConfig, TrainRun};
use crate::output::plot::{Heatmap, LineChart};
use crate::output::report::{MetricRow, Table, Verdict, per_head_text};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, positive, validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::train_seeds;

/// `configs/induction_heads.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InductionConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Must be `repeat-segment`.
    pub task: TaskConfig,
    /// The model with two or more layers, causal, without a BOS; the control is the same model
    /// with one layer.
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Held-out sequences the trained models are measured on.
    pub eval_size: usize,
    /// Recorded steps averaged (centred) before the phase window is read off a curve.
    pub smooth_records: usize,
    /// The phase window is the narrowest span of steps holding this share of the repeat loss's
    /// whole drop (from the first recorded step to the last), in (0.5, 1): "most of the drop".
    pub phase_share: f64,
    /// The drop is abrupt when that window spans at most this share of the training steps.
    pub abrupt_share: f64,
    /// A head is a previous-token head, or a prefix-matching (induction) head, when its score
    /// passes this.
    pub head_threshold: f64,
}

impl InductionConfig {
    fn model_with(&self, n_layers: usize) -> ModelConfig {
        ModelConfig {
            n_layers,
            ..self.model.clone()
        }
    }

    fn variants(&self) -> [(String, ModelConfig); 2] {
        let layers = self.model.n_layers;
        [
            (format!("{layers}-layer"), self.model_with(layers)),
            ("1-layer".to_string(), self.model_with(1)),
        ]
    }
}

impl Validate for InductionConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        validate_in("task", &self.task)?;
        if self.task.kind != TaskKind::RepeatSegment {
            return Err(Invalid::new(
                "task.kind",
                format!("must be \"repeat-segment\", got \"{}\"", self.task.kind),
            ));
        }
        validate_in("model", &self.model)?;
        at_least("model.n_layers", self.model.n_layers, 2)?;
        if !self.model.causal {
            return Err(Invalid::new(
                "model.causal",
                "must be true: without the mask every next token is in view, and nothing needs an induction head",
            ));
        }
        if self.model.bos {
            return Err(Invalid::new(
                "model.bos",
                "must be false: the scores are read over the sequence's own positions",
            ));
        }
        validate_in("train", &self.train)?;
        at_least("eval_size", self.eval_size, 1)?;
        at_least("smooth_records", self.smooth_records, 1)?;
        if !(self.phase_share > 0.5 && self.phase_share < 1.0) {
            return Err(Invalid::new(
                "phase_share",
                format!("must lie in (0.5, 1), got {}", self.phase_share),
            ));
        }
        for (key, value) in [
            ("abrupt_share", self.abrupt_share),
            ("head_threshold", self.head_threshold),
        ] {
            positive(key, value)?;
            if value >= 1.0 {
                return Err(Invalid::new(key, format!("must be below 1, got {value}")));
            }
        }
        Ok(())
    }
}

experiment_config!(InductionConfig);

/// Where the repeat loss fell, in one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Phase {
    /// The recorded step where the smoothed repeat loss falls fastest.
    pub fastest_step: usize,
    /// The narrowest span of steps holding the configured share of the whole drop.
    pub start: usize,
    pub end: usize,
    /// The smoothed repeat loss at the first and the last recorded step.
    pub from: f64,
    pub to: f64,
}

impl Phase {
    pub fn width(&self) -> usize {
        self.end - self.start
    }
}

/// `values` averaged over a centred window of `k` records (fewer at the ends).
pub fn smooth(values: &[f64], k: usize) -> Vec<f64> {
    let half = k / 2;
    (0..values.len())
        .map(|i| {
            let window = &values[i.saturating_sub(half)..(i + half + 1).min(values.len())];
            window.iter().sum::<f64>() / window.len() as f64
        })
        .collect()
}

/// The phase of a falling curve `(step, value)`, smoothed over `k` records: where it falls
/// fastest, and the narrowest span of steps over which it falls by `share` of its whole drop
/// (first minus last smoothed value). `None` when it has fewer than three points or does not
/// fall.
pub fn phase(series: &[(usize, f64)], k: usize, share: f64) -> Option<Phase> {
    if series.len() < 3 {
        return None;
    }
    let steps: Vec<usize> = series.iter().map(|p| p.0).collect();
    let s = smooth(&series.iter().map(|p| p.1).collect::<Vec<_>>(), k);
    let (from, to) = (s[0], s[s.len() - 1]);
    let drop = from - to;
    if drop <= 0.0 {
        return None;
    }
    let fastest = (1..s.len() - 1)
        .max_by(|&a, &b| {
            let rate = |i: usize| (s[i - 1] - s[i + 1]) / (steps[i + 1] - steps[i - 1]) as f64;
            rate(a).total_cmp(&rate(b))
        })
        .expect("three points or more");
    let mut best: Option<(usize, usize)> = None;
    for i in 0..s.len() {
        if let Some(j) = (i + 1..s.len()).find(|&j| s[i] - s[j] >= share * drop) {
            let width = steps[j] - steps[i];
            if best.is_none_or(|(a, b)| width < steps[b] - steps[a]) {
                best = Some((i, j));
            }
        }
    }
    let (i, j) = best?;
    Some(Phase {
        fastest_step: steps[fastest],
        start: steps[i],
        end: steps[j],
        from,
        to,
    })
}

/// The share of a rising curve's whole rise (first to last smoothed value) that happens between
/// steps `start` and `end`; 0 when it does not rise.
pub fn rise_within(series: &[(usize, f64)], k: usize, start: usize, end: usize) -> f64 {
    let s = smooth(&series.iter().map(|p| p.1).collect::<Vec<_>>(), k);
    let at = |step: usize| {
        let i = series.partition_point(|p| p.0 < step).min(s.len() - 1);
        s[i]
    };
    let whole = s[s.len() - 1] - s[0];
    if whole <= 0.0 {
        return 0.0;
    }
    (at(end) - at(start)) / whole
}

/// One trained model on held-out sequences.
#[derive(Debug, Clone, Serialize)]
pub struct SeedMeasure {
    pub seed: u64,
    pub repeat_loss: f64,
    pub first_copy_loss: f64,
    pub icl_score: f64,
    /// Per layer, per head.
    pub previous_token: Vec<Vec<f64>>,
    pub prefix_match: Vec<Vec<f64>>,
    /// From the training records (repeat loss), when it fell.
    pub phase: Option<Phase>,
    /// Share of the best last-layer head's prefix-matching rise that happened inside the phase
    /// window.
    pub prefix_rise_in_window: Option<f64>,
}

impl SeedMeasure {
    fn best(scores: &[Vec<f64>], layer: usize) -> (usize, f64) {
        scores[layer]
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::MIN), |b, x| if x.1 > b.1 { x } else { b })
    }

    fn best_prefix_last(&self) -> (usize, f64) {
        Self::best(&self.prefix_match, self.prefix_match.len() - 1)
    }

    fn best_prefix_any(&self) -> f64 {
        self.prefix_match
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
    }

    fn best_previous_first(&self) -> (usize, f64) {
        Self::best(&self.previous_token, 0)
    }
}

/// One model over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ModelMeasure {
    pub label: String,
    pub n_layers: usize,
    pub seeds: Vec<SeedMeasure>,
}

impl ModelMeasure {
    fn spread(&self, value: impl Fn(&SeedMeasure) -> f64) -> Spread {
        Spread::of(&self.seeds.iter().map(value).collect::<Vec<_>>())
    }
}

fn repeat_series(run: &TrainRun) -> Vec<(usize, f64)> {
    run.records
        .iter()
        .filter_map(|r| r.induction.map(|l| (r.step, l.repeat)))
        .collect()
}

/// Head `(layer, head)`'s score over the recorded steps.
fn head_series(
    run: &TrainRun,
    layer: usize,
    head: usize,
    score: impl Fn(&crate::lab::train::HeadInduction) -> f64,
) -> Vec<(usize, f64)> {
    run.records
        .iter()
        .filter_map(|r: &StepRecord| {
            r.heads
                .iter()
                .find(|h| h.layer == layer && h.head == head)
                .and_then(|h| h.induction.as_ref())
                .map(|s| (r.step, score(s)))
        })
        .collect()
}

/// The experiment.
pub struct InductionHeads;

impl Experiment for InductionHeads {
    const NAME: &'static str = "induction_heads";
    const TITLE: &'static str =
        "two attention layers form an induction head in a phase change; one layer cannot";
    const CLAIM: &'static str = "A transformer with two attention layers forms induction heads \
        (find the previous occurrence of the current token, predict the token that followed it), \
        and they form abruptly, in a phase change, while the loss on repeated text falls at the \
        same moment (Olsson et al. 2022). A layer-1 head becomes a previous-token head and a \
        layer-2 head a prefix-matching head (Elhage et al. 2021). A one-layer model cannot \
        compose them: its loss on the repeats stays flat. Attention-only models of one and two \
        layers are trained at several seeds on a segment of random length repeated to fill the \
        sequence.";
    type Config = InductionConfig;

    fn footprint(config: &InductionConfig) -> Footprint {
        let batch = config.train.batch_size.max(config.eval_size);
        footprint::training_on(&config.model, &config.task, batch)
    }

    fn work(config: &InductionConfig) -> u64 {
        (2 * config.run.seeds * config.train.steps) as u64
    }

    fn run(config: &InductionConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let task = Task::new(config.task.clone())?;
        let seeds = config.run.seed_list();
        let batch = eval_batch(&task, config.eval_size, config.run.seed);
        let mut trained = Vec::new();
        let mut measured = Vec::new();
        for (label, model) in config.variants() {
            let runs = train_seeds(
                notebook,
                "induction",
                &label,
                &model,
                &task,
                &config.train,
                &seeds,
            )?;
            let seeds_measured: Vec<SeedMeasure> = runs
                .runs
                .iter()
                .zip(&seeds)
                .map(|(run, &seed)| measure(config, &task, &batch, seed, run, &notebook.device))
                .collect();
            let m = ModelMeasure {
                label: label.clone(),
                n_layers: model.n_layers,
                seeds: seeds_measured,
            };
            record(&m, notebook);
            notebook.say(format!(
                "{label}: held-out loss on the repeats {}, on the first copy {}, best prefix-matching score {}",
                m.spread(|s| s.repeat_loss),
                m.spread(|s| s.first_copy_loss),
                m.spread(SeedMeasure::best_prefix_any)
            ));
            trained.push(runs);
            measured.push(m);
        }
        tables(config, &task, &measured, notebook);
        plots(config, &task, &trained, &measured, notebook)?;
        judge(config, &task, &measured, notebook);
        notebook.summarize("models", &measured);
        Ok(())
    }
}

/// One trained model on the held-out `batch`, and its phase from the training records.
fn measure(
    config: &InductionConfig,
    task: &Task,
    batch: &Batch,
    seed: u64,
    run: &TrainRun,
    device: &Device,
) -> SeedMeasure {
    let model: TinyTransformer = run.model.valid();
    let out = model.forward(batch.tokens(device), task.n_out());
    let mask = InductionMask::of(batch);
    let loss = mask.losses(out.logits.clone(), batch);
    let (mut previous_token, mut prefix_match) = (vec![], vec![]);
    for a in &out.attention {
        let scores = mask.head_scores(a.weights());
        previous_token.push(scores.iter().map(|s| s.previous_token).collect());
        prefix_match.push(scores.iter().map(|s| s.prefix_match).collect());
    }
    let phase = phase(
        &repeat_series(run),
        config.smooth_records,
        config.phase_share,
    );
    let last = out.attention.len() - 1;
    let (best_head, _) = SeedMeasure::best(&prefix_match, last);
    // Only where a later layer can compose with an earlier one is there an induction head to
    // time against the drop.
    let prefix_rise_in_window = phase.filter(|_| last > 0).map(|p| {
        rise_within(
            &head_series(run, last, best_head, |s| s.prefix_match),
            config.smooth_records,
            p.start,
            p.end,
        )
    });
    SeedMeasure {
        seed,
        repeat_loss: loss.repeat,
        first_copy_loss: loss.first,
        icl_score: loss.icl_score(),
        previous_token,
        prefix_match,
        phase,
        prefix_rise_in_window,
    }
}

fn record(m: &ModelMeasure, notebook: &mut Notebook) {
    for s in &m.seeds {
        let row = |metric: &str, value: f64| {
            MetricRow::new("held_out", &m.label, metric, value).seed(s.seed)
        };
        for (metric, value) in [
            ("repeat_loss", s.repeat_loss),
            ("first_copy_loss", s.first_copy_loss),
            ("icl_score", s.icl_score),
        ] {
            notebook.metric(row(metric, value));
        }
        for (layer, heads) in s.prefix_match.iter().enumerate() {
            for (head, p) in heads.iter().enumerate() {
                notebook.metric(
                    row("prefix_matching_score", *p)
                        .layer(Some(layer))
                        .head(head),
                );
                notebook.metric(
                    row("previous_token_score", s.previous_token[layer][head])
                        .layer(Some(layer))
                        .head(head),
                );
            }
        }
        if let Some(p) = s.phase {
            for (metric, value) in [
                ("phase_fastest_step", p.fastest_step as f64),
                ("phase_start", p.start as f64),
                ("phase_end", p.end as f64),
            ] {
                notebook.metric(MetricRow::new("phase", &m.label, metric, value).seed(s.seed));
            }
        }
    }
}

fn phase_text(phase: Option<Phase>) -> String {
    match phase {
        Some(p) => format!(
            "{}–{} (fastest at {}; {:.2} → {:.2})",
            p.start, p.end, p.fastest_step, p.from, p.to
        ),
        None => "no drop".into(),
    }
}

fn tables(
    config: &InductionConfig,
    task: &Task,
    measured: &[ModelMeasure],
    notebook: &mut Notebook,
) {
    let lengths = task.segment_lengths();
    let mut table = Table::new(
        format!(
            "Held-out loss on {} sequences of {} tokens (segments of {} to {} symbols out of {}), mean ± std over {} seed(s); ln {} = {:.2} is a model that knows only which symbols the segment holds",
            config.eval_size,
            task.seq_len(),
            lengths.start(),
            lengths.end(),
            config.task.symbols,
            config.run.seeds,
            lengths.start(),
            (*lengths.start() as f64).ln()
        ),
        &[
            "model",
            "loss on the repeats",
            "loss on the first copy",
            "in-context-learning score (late − early)",
            "best prefix-matching score (any layer)",
        ],
    );
    for m in measured {
        table.row(vec![
            m.label.clone(),
            format!("{}", m.spread(|s| s.repeat_loss)),
            format!("{}", m.spread(|s| s.first_copy_loss)),
            format!("{}", m.spread(|s| s.icl_score)),
            format!("{}", m.spread(SeedMeasure::best_prefix_any)),
        ]);
    }
    notebook.table(table);

    let mut seeds = Table::new(
        format!(
            "Per seed: the phase window (the narrowest span of steps holding {:.0} % of the repeat loss's drop, smoothed over {} records), and each head's scores on held-out sequences",
            config.phase_share * 100.0,
            config.smooth_records
        ),
        &[
            "model",
            "seed",
            "phase window (steps)",
            "previous-token score per head",
            "prefix-matching score per head",
            "share of the induction head's rise inside the window",
        ],
    );
    for m in measured {
        for s in &m.seeds {
            seeds.row(vec![
                m.label.clone(),
                s.seed.to_string(),
                phase_text(s.phase),
                per_head_text(&s.previous_token, 1),
                per_head_text(&s.prefix_match, 1),
                s.prefix_rise_in_window
                    .map_or("-".into(), |r| format!("{r:.2}")),
            ]);
        }
    }
    notebook.table(seeds);
}

fn plots(
    config: &InductionConfig,
    task: &Task,
    trained: &[SeedRuns],
    measured: &[ModelMeasure],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let (deep, shallow) = (&trained[0].runs[0], &trained[1].runs[0]);
    let phase = measured[0].seeds[0].phase;
    let as_f64 = |s: Vec<(usize, f64)>| s.into_iter().map(|(x, y)| (x as f64, y)).collect();
    let loss_of = |run: &TrainRun, first: bool| {
        as_f64(
            run.records
                .iter()
                .filter_map(|r| {
                    r.induction
                        .map(|l| (r.step, if first { l.first } else { l.repeat }))
                })
                .collect(),
        )
    };
    let mut losses = LineChart::new(
        "Loss on the repeats and on the first copy over training (first seed)",
        "step",
        "loss (nats)",
    );
    for (label, run) in [(&measured[0].label, deep), (&measured[1].label, shallow)] {
        losses = losses
            .line(format!("{label}: repeats"), loss_of(run, false))
            .line(format!("{label}: first copy"), loss_of(run, true));
    }
    if let Some(p) = phase {
        losses = losses.band("phase window", p.start as f64, p.end as f64);
    }
    notebook.plot(
        "loss_vs_step",
        "The repeat loss falls in a phase change with two layers, not with one",
        losses.to_svg(),
    )?;

    let mut repeats = LineChart::new(
        format!("Loss on the repeats, every seed ({})", measured[0].label),
        "step",
        "loss (nats)",
    );
    for (run, s) in trained[0].runs.iter().zip(&measured[0].seeds) {
        repeats = repeats.line(format!("seed {}", s.seed), as_f64(repeat_series(run)));
    }
    notebook.plot(
        "repeat_loss_every_seed",
        "The phase change at every seed",
        repeats.to_svg(),
    )?;

    let mut icl = LineChart::new(
        "In-context-learning score over training: loss on the last quarter of positions minus the first (mean over seeds)",
        "step",
        "late − early loss (nats)",
    );
    for (runs, m) in trained.iter().zip(measured) {
        icl = icl.line(
            &m.label,
            runs.mean_series(|r| r.induction.map_or(f64::NAN, |l| l.icl_score())),
        );
    }
    if let Some(p) = phase {
        icl = icl.band("phase window (first seed)", p.start as f64, p.end as f64);
    }
    notebook.plot(
        "icl_score_vs_step",
        "In-context learning jumps in the same window",
        icl.to_svg(),
    )?;

    let last = measured[0].n_layers - 1;
    let s0 = &measured[0].seeds[0];
    let (induction_head, _) = s0.best_prefix_last();
    let (previous_head, _) = s0.best_previous_first();
    let mut scores = LineChart::new(
        "Head scores over training (first seed)",
        "step",
        "score (mean weight)",
    )
    .line(
        format!(
            "layer {} head {}: prefix matching",
            last + 1,
            induction_head + 1
        ),
        as_f64(head_series(deep, last, induction_head, |s| s.prefix_match)),
    )
    .line(
        format!("layer 1 head {}: previous token", previous_head + 1),
        as_f64(head_series(deep, 0, previous_head, |s| s.previous_token)),
    );
    let (control_head, _) = measured[1].seeds[0].best_prefix_last();
    scores = scores.line(
        format!("1 layer, head {}: prefix matching", control_head + 1),
        as_f64(head_series(shallow, 0, control_head, |s| s.prefix_match)),
    );
    if let Some(p) = phase {
        scores = scores.band("phase window", p.start as f64, p.end as f64);
    }
    notebook.plot(
        "head_scores_vs_step",
        "The induction head and the previous-token head form in the phase window",
        scores.to_svg(),
    )?;

    let example = example_batch(task, config.run.seed);
    let names: Vec<String> = example
        .tokens
        .iter()
        .map(|&t| task.token_name(t as usize))
        .collect();
    let model = deep.model.valid();
    let out = model.forward(example.tokens(&notebook.device), task.n_out());
    for (file, layer, head, what) in [
        ("induction_head", last, induction_head, "the induction head"),
        (
            "previous_token_head",
            0,
            previous_head,
            "the previous-token head",
        ),
    ] {
        let map = Heatmap::new(
            format!(
                "{}: layer {}, head {} on a held-out sequence, first seed",
                what,
                layer + 1,
                head + 1
            ),
            "query",
            "key",
            head_matrix(out.attention[layer].weights(), 0, head),
        )
        .names(names.clone(), names.clone());
        notebook.plot(
            file,
            &format!("{what} on one repeated sequence"),
            map.to_svg(),
        )?;
    }
    Ok(())
}

fn judge(
    config: &InductionConfig,
    task: &Task,
    measured: &[ModelMeasure],
    notebook: &mut Notebook,
) {
    let (deep, shallow) = (&measured[0], &measured[1]);
    let steps = config.train.steps;
    let widest = (config.abrupt_share * steps as f64).round() as usize;
    // A model that knows only which symbols the segment holds, and not their order, predicts a
    // repeat no better than ln r ≥ ln r_min; half of that is out of its reach.
    let floor = (*task.segment_lengths().start() as f64).ln();
    let solved = floor / 2.0;
    let phases: Vec<String> = deep
        .seeds
        .iter()
        .map(|s| format!("seed {}: {}", s.seed, phase_text(s.phase)))
        .collect();
    let abrupt = deep
        .seeds
        .iter()
        .all(|s| s.repeat_loss < solved && s.phase.is_some_and(|p| p.width() <= widest));
    notebook.verdict(Verdict::new(
        format!(
            "the {} model's loss on the repeats falls abruptly: {:.0} % of its drop within {widest} steps ({:.0} % of training), down below {solved:.2} nats, in every seed",
            deep.label,
            config.phase_share * 100.0,
            config.abrupt_share * 100.0
        ),
        abrupt,
        format!(
            "phase windows {}; held-out loss on the repeats {} (half of ln r_min = {floor:.2} is {solved:.2})",
            phases.join("; "),
            deep.spread(|s| s.repeat_loss)
        ),
    ));

    let threshold = config.head_threshold;
    let last = deep.n_layers;
    let per_seed: Vec<String> = deep
        .seeds
        .iter()
        .map(|s| {
            let (h, p) = s.best_prefix_last();
            let (g, q) = s.best_previous_first();
            format!(
                "seed {}: layer {last} head {} prefix matching {p:.2} ({} of its rise in the window), layer 1 head {} previous token {q:.2}",
                s.seed,
                h + 1,
                s.prefix_rise_in_window
                    .map_or("no window".into(), |r| format!("{:.0} %", r * 100.0)),
                g + 1
            )
        })
        .collect();
    let heads_form = deep.seeds.iter().all(|s| {
        s.best_prefix_last().1 > threshold
            && s.best_previous_first().1 > threshold
            && s.prefix_rise_in_window.is_some_and(|r| r > 0.5)
    });
    notebook.verdict(Verdict::new(
        format!(
            "a layer-{last} head becomes a prefix-matching head (score above {threshold}), most of its rise inside the phase window, and a layer-1 head a previous-token head (above {threshold}), in every seed"
        ),
        heads_form,
        per_seed.join("; "),
    ));

    let control: Vec<String> = shallow
        .seeds
        .iter()
        .map(|s| {
            format!(
                "seed {}: repeat loss {:.2}, best prefix matching {:.2}",
                s.seed,
                s.repeat_loss,
                s.best_prefix_any()
            )
        })
        .collect();
    let flat = shallow
        .seeds
        .iter()
        .all(|s| s.repeat_loss >= solved && s.best_prefix_any() <= threshold);
    notebook.verdict(Verdict::new(
        format!(
            "the 1-layer control stays flat: its loss on the repeats stays above {solved:.2} nats and no head passes {threshold} on prefix matching, in every seed"
        ),
        flat,
        format!(
            "{}; the {} model reached {}",
            control.join("; "),
            deep.label,
            deep.spread(|s| s.repeat_loss)
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_down_is_found_where_it_happens() {
        // Flat at 3 until step 400, down to 0.5 by step 500, flat after.
        let series: Vec<(usize, f64)> = (0..=100)
            .map(|i| {
                let step = i * 10;
                let v = if step < 400 {
                    3.0
                } else if step < 500 {
                    3.0 - 2.5 * (step - 400) as f64 / 100.0
                } else {
                    0.5
                };
                (step, v)
            })
            .collect();
        let p = phase(&series, 1, 0.8).unwrap();
        assert!((400..=500).contains(&p.fastest_step), "{p:?}");
        assert!(p.start >= 400 && p.end <= 500 && p.width() <= 90, "{p:?}");
        // A steady slope spreads the drop over most of the run.
        let line: Vec<(usize, f64)> = (0..=100).map(|i| (i * 10, 3.0 - 0.02 * i as f64)).collect();
        assert!(phase(&line, 1, 0.8).unwrap().width() >= 790);
        // Half of a rise inside the window.
        let rise: Vec<(usize, f64)> = (0..=100).map(|i| (i * 10, i as f64)).collect();
        assert!((rise_within(&rise, 1, 250, 750) - 0.5).abs() < 1e-9);
        assert!(phase(&[(0, 1.0), (1, 2.0), (2, 3.0)], 1, 0.8).is_none());
    }
}
