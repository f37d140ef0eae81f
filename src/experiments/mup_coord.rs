//! `mup_coord`: µP's 1/d_k attention and per-layer Adam rates keep activations the same size
//! across widths, and the best learning rate transfers from a narrow model to a wide one.
//!
//! Yang et al. 2022 ("Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
//! Hyperparameter Transfer") argue that in the standard parametrisation (SP: 1/√d_k, one Adam
//! rate) the updates' effect on the activations grows with the width, so a wide model's best
//! rate is smaller than a narrow one's. µP divides the scores by d_k (q and k become correlated
//! during training, so q·k grows as d_k, not √d_k), starts W_Q and the readout at zero, and
//! scales the hidden matrices' Adam rates by base/width ([`crate::lab::mup`]). Their "coord
//! check" trains each width for a few steps and plots the activations' size against the width:
//! flat lines are µP, rising lines are SP. This experiment runs the coord check and the
//! learning-rate sweep at several widths, with the head count fixed so d_k grows with the width.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::block::scale::ScoreScale;
use crate::lab::evaluate::{SeedRuns, eval_batch, held_out_loss};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, log_log_slope};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig};
use crate::lab::train::{LrSchedule, StepRecord, TrainConfig, default_adam_epsilon};
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, increasing, non_empty, positive,
    validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{keep_models, run_seeds};

/// `configs/mup_coord.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MupCoordConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub task: TaskConfig,
    /// The base model: its `d_model` is µP's base width, every width scales `d_model` and `d_ff`
    /// in proportion, and `n_heads` stays, so d_k = width / n_heads. `scale`, `d_k` and
    /// `mup_base_width` are set by the experiment, so they must be absent.
    pub model: ModelConfig,
    pub coord: CoordCheck,
    pub transfer: Transfer,
}

/// The coordinate check: a few steps at each width, one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordCheck {
    /// d_model of each model, increasing.
    pub widths: Vec<usize>,
    /// Steps t = 1…steps are measured (after t updates).
    pub steps: usize,
    /// Adam's rate: SP's for every parameter, µP's at the base width.
    pub lr: f64,
    pub batch_size: usize,
    /// Adam's ε (default Burn's 1e-5): see the README on why it matters here.
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
}

/// The learning-rate sweep at a few widths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// d_model of each model, increasing; the shift is measured from the first to the last.
    pub widths: Vec<usize>,
    /// log₂ of the Adam rates, increasing: a step of 1 is a factor of 2.
    pub lr_log2: Vec<i32>,
    pub steps: usize,
    pub batch_size: usize,
    pub log_every: usize,
    /// Held-out sequences the final loss is measured on.
    pub eval_size: usize,
    /// Adam's ε (default Burn's 1e-5).
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
    /// As `train.check_every_step` elsewhere: read every step back (default false).
    #[serde(default)]
    pub check_every_step: bool,
}

/// The two parametrisations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Param {
    /// Standard: 1/√d_k, one Adam rate, the usual initialisation.
    Sp,
    /// µP: 1/d_k, zero W_Q and readout, hidden rates × base/width.
    Mup,
}

impl Param {
    pub const BOTH: [Param; 2] = [Param::Sp, Param::Mup];

    pub fn name(self) -> &'static str {
        match self {
            Param::Sp => "SP",
            Param::Mup => "µP",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Param::Sp => "sp",
            Param::Mup => "mup",
        }
    }
}

impl MupCoordConfig {
    /// The model at `width` in `param`.
    pub fn model_at(&self, width: usize, param: Param) -> ModelConfig {
        let base = self.model.d_model;
        ModelConfig {
            d_model: width,
            d_ff: self.model.d_ff.map(|d_ff| d_ff * width / base),
            scale: match param {
                Param::Sp => ScoreScale::SqrtDk,
                Param::Mup => ScoreScale::Dk,
            },
            mup_base_width: (param == Param::Mup).then_some(base),
            ..self.model.clone()
        }
    }

    fn coord_train(&self) -> TrainConfig {
        TrainConfig {
            // Step 0 is the initialisation; steps 1…t follow t updates.
            steps: self.coord.steps + 1,
            batch_size: self.coord.batch_size,
            lr: self.coord.lr,
            log_every: 1,
            adam_epsilon: self.coord.adam_epsilon,
            // Every step is recorded, so every step is read back already.
            check_every_step: false,
            warmup_steps: 0,
            schedule: LrSchedule::Constant,
            weight_decay: 0.0,
        }
    }

    fn transfer_train(&self, lr_log2: i32) -> TrainConfig {
        TrainConfig {
            steps: self.transfer.steps,
            batch_size: self.transfer.batch_size,
            lr: 2f64.powi(lr_log2),
            log_every: self.transfer.log_every,
            adam_epsilon: self.transfer.adam_epsilon,
            check_every_step: self.transfer.check_every_step,
            warmup_steps: 0,
            schedule: LrSchedule::Constant,
            weight_decay: 0.0,
        }
    }

    fn widths(&self) -> impl Iterator<Item = usize> + '_ {
        self.coord
            .widths
            .iter()
            .chain(&self.transfer.widths)
            .copied()
    }
}

impl Validate for MupCoordConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        validate_in("task", &self.task)?;
        for (key, set) in [
            ("model.scale", self.model.scale != ScoreScale::SqrtDk),
            ("model.d_k", self.model.d_k.is_some()),
            ("model.mup_base_width", self.model.mup_base_width.is_some()),
        ] {
            if set {
                return Err(Invalid::new(
                    key,
                    "is set by the experiment (SP and µP differ in it, and d_k = width / n_heads); leave it out",
                ));
            }
        }
        for (key, widths) in [
            ("coord.widths", &self.coord.widths),
            ("transfer.widths", &self.transfer.widths),
        ] {
            non_empty(key, widths)?;
            at_least(&format!("{key} (how many)"), widths.len(), 2)?;
            increasing(key, widths)?;
        }
        // The slopes are judged from t = 2 (see `Coord::slopes`): two steps at the least.
        at_least("coord.steps", self.coord.steps, 2)?;
        positive("coord.lr", self.coord.lr)?;
        non_empty("transfer.lr_log2", &self.transfer.lr_log2)?;
        increasing("transfer.lr_log2", &self.transfer.lr_log2)?;
        if let Some(&k) = self
            .transfer
            .lr_log2
            .iter()
            .find(|k| !(-30..=0).contains(*k))
        {
            return Err(Invalid::new(
                "transfer.lr_log2",
                format!("{k} is outside -30…0 (rates from 2^-30 to 1)"),
            ));
        }
        at_least("transfer.eval_size", self.transfer.eval_size, 1)?;
        validate_in("coord", &self.coord_train())?;
        validate_in("transfer", &self.transfer_train(self.transfer.lr_log2[0]))?;
        for width in self.widths() {
            for param in Param::BOTH {
                Validate::validate(&self.model_at(width, param)).map_err(|e| {
                    Invalid::new(
                        "model",
                        format!("at width {width} ({}): {}", param.name(), e),
                    )
                })?;
            }
        }
        Ok(())
    }
}

experiment_config!(MupCoordConfig);

/// A log–log slope this small is "flat": the quantity changes by less than 2× over a 16× range
/// of widths (2^(4·0.25) = 2), where SP's theory predicts a slope of 1 or more for the logits
/// (Δq grows as the width; q·k sums d_k correlated terms).
pub const FLAT: f64 = 0.25;

/// A quantity the coord check follows: its name, a short key for file names, and how it is read
/// off a record.
struct Quantity {
    name: String,
    key: String,
    value: Box<dyn Fn(&StepRecord) -> f64>,
}

/// The attention logits' std, each layer's attention output, and the readout.
fn quantities(layers: usize) -> Vec<Quantity> {
    let mut q = vec![Quantity {
        name: "attention-logit std".into(),
        key: "logit_std".into(),
        value: Box::new(StepRecord::mean_logit_std),
    }];
    for layer in 0..layers {
        q.push(Quantity {
            name: format!("layer {layer} attention output mean |x|"),
            key: format!("layer{layer}_output"),
            value: Box::new(move |r: &StepRecord| r.output_abs[layer]),
        });
    }
    q.push(Quantity {
        name: "readout mean |logit|".into(),
        key: "readout".into(),
        value: Box::new(StepRecord::readout_abs),
    });
    q
}

/// One quantity's coordinate check in one parametrisation.
#[derive(Debug, Clone, Serialize)]
pub struct Coord {
    pub param: Param,
    pub quantity: String,
    pub key: String,
    /// Per step t = 1…T: (width, mean over seeds) at each width.
    pub values: Vec<Vec<(f64, f64)>>,
    /// Per step t = 2…T: the log–log slope over widths. t = 1 is left out: µP's W_Q gets no
    /// gradient through the zero readout on the first step, so its logits are exactly 0 at every
    /// width there, where log 0 has no slope (counting it as a flat 0 would pull µP's mean toward
    /// "flat").
    pub slopes: Vec<f64>,
}

impl Coord {
    fn of(
        param: Param,
        quantity: &Quantity,
        widths: &[usize],
        runs: &[SeedRuns],
        t_max: usize,
    ) -> Self {
        let value = quantity.value.as_ref();
        let values: Vec<Vec<(f64, f64)>> = (1..=t_max)
            .map(|t| {
                widths
                    .iter()
                    .zip(runs)
                    .map(|(&w, r)| (w as f64, mean_at(r, t, value)))
                    .collect()
            })
            .collect();
        let slopes = slopes_from_t2(&values);
        Self {
            param,
            quantity: quantity.name.clone(),
            key: quantity.key.clone(),
            values,
            slopes,
        }
    }

    /// The slope averaged over t = 2…T: the coord check's lines read as one number.
    pub fn mean_slope(&self) -> f64 {
        self.slopes.iter().sum::<f64>() / self.slopes.len() as f64
    }

    fn flat(&self) -> bool {
        self.mean_slope().abs() <= FLAT
    }

    fn grows(&self) -> bool {
        self.mean_slope() > FLAT
    }

    fn slope_range(&self) -> String {
        let (lo, hi) = self
            .slopes
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(*s), hi.max(*s))
            });
        format!("{:+.2} (per t {lo:+.2} … {hi:+.2})", self.mean_slope())
    }
}

/// The log–log slope over widths at each step t = 2…T of `values` (one entry per t from 1).
fn slopes_from_t2(values: &[Vec<(f64, f64)>]) -> Vec<f64> {
    values
        .iter()
        .skip(1)
        .map(|points| log_log_slope(points))
        .collect()
}

/// Mean over seeds of `value` at step `t` (NaN where a seed stopped before it).
fn mean_at(runs: &SeedRuns, t: usize, value: &dyn Fn(&StepRecord) -> f64) -> f64 {
    let values: Vec<f64> = runs
        .runs
        .iter()
        .map(|r| {
            r.records
                .iter()
                .find(|rec| rec.step == t)
                .map_or(f64::NAN, value)
        })
        .collect();
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sweep at one width in one parametrisation.
#[derive(Debug, Clone, Serialize)]
pub struct SweepAt {
    pub param: Param,
    pub width: usize,
    /// (log₂ rate, held-out loss over seeds; a diverged seed counts at its initial loss).
    pub losses: Vec<(i32, Spread)>,
    pub diverged: usize,
}

impl SweepAt {
    /// The rate with the lowest mean held-out loss, as log₂.
    pub fn best(&self) -> (i32, Spread) {
        *self
            .losses
            .iter()
            .min_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
            .expect("a non-empty sweep")
    }
}

/// The experiment.
pub struct MupCoord;

impl Experiment for MupCoord {
    const NAME: &'static str = "mup_coord";
    const TITLE: &'static str =
        "µP keeps activations width-independent and transfers the best learning rate";
    const CLAIM: &'static str = "Yang et al. 2022 (µP, Tensor Programs V) claim that in the \
        standard parametrisation (1/√d_k, one Adam rate) the attention logits and the layers' \
        outputs after a few training steps grow with the width, so the best learning rate \
        shrinks as the model widens, while µP (1/d_k attention, W_Q and the readout started at \
        zero, Adam rates of the width × width matrices and the readout scaled by base/width) keeps \
        them the same size at every width, so the best rate of a narrow model is the best rate of \
        a wide one. A causal transformer with a fixed head count (so d_k grows with the width) is \
        trained with Adam on associative recall: a coordinate check over widths, and a \
        learning-rate sweep at three widths judged on held-out sequences.";
    type Config = MupCoordConfig;

    fn footprint(config: &MupCoordConfig) -> Footprint {
        let widest = config.widths().max().unwrap_or(config.model.d_model);
        // The held-out batch goes forward only, so a training step on a batch as large bounds it.
        let batch = config
            .coord
            .batch_size
            .max(config.transfer.batch_size)
            .max(config.transfer.eval_size);
        footprint::training_on(&config.model_at(widest, Param::Sp), &config.task, batch)
    }

    fn work(config: &MupCoordConfig) -> u64 {
        let seeds = config.run.seeds;
        let coord = config.coord.widths.len() * (config.coord.steps + 1);
        let transfer =
            config.transfer.widths.len() * config.transfer.lr_log2.len() * config.transfer.steps;
        (2 * seeds * (coord + transfer)) as u64
    }

    fn run(config: &MupCoordConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let task = Task::new(config.task.clone())?;
        let seeds = config.run.seed_list();
        let t_max = config.coord.steps;
        let mut coords = Vec::new();
        for param in Param::BOTH {
            let mut runs = Vec::new();
            for &width in &config.coord.widths {
                let label = format!("{},d_model={width}", param.key());
                let model = config.model_at(width, param);
                runs.push(run_seeds(
                    notebook,
                    "coord",
                    &label,
                    &model,
                    std::slice::from_ref(&task),
                    &config.coord_train(),
                    &seeds,
                )?);
            }
            for quantity in quantities(config.model.n_layers) {
                coords.push(Coord::of(
                    param,
                    &quantity,
                    &config.coord.widths,
                    &runs,
                    t_max,
                ));
            }
        }

        // One held-out batch for every width, rate and seed: drawn from its own stream, never
        // trained on.
        let held_out = eval_batch(&task, config.transfer.eval_size, config.run.seed);
        let initial = (task.classes() as f64).ln();
        let mut sweeps = Vec::new();
        for param in Param::BOTH {
            for &width in &config.transfer.widths {
                let model = config.model_at(width, param);
                let mut losses = Vec::new();
                let mut diverged = 0;
                let mut best: Option<(f64, String, SeedRuns)> = None;
                for &k in &config.transfer.lr_log2 {
                    let label = format!("{},d_model={width},lr=2^{k}", param.key());
                    let runs = run_seeds(
                        notebook,
                        "transfer",
                        &label,
                        &model,
                        std::slice::from_ref(&task),
                        &config.transfer_train(k),
                        &seeds,
                    )?;
                    let per_seed: Vec<f64> = runs
                        .runs
                        .iter()
                        .map(|r| {
                            let loss = held_out_loss(r, &task, &held_out, &notebook.device);
                            // Wortsman et al.'s min(L, L₀): a run that diverged or ended worse than
                            // chance counts at chance.
                            if r.divergence.is_some() || !loss.is_finite() {
                                initial
                            } else {
                                loss.min(initial)
                            }
                        })
                        .collect();
                    diverged += runs.runs.iter().filter(|r| r.divergence.is_some()).count();
                    let loss = Spread::of(&per_seed);
                    notebook.metric(MetricRow::new(
                        "transfer",
                        &label,
                        "held_out_loss",
                        loss.mean,
                    ));
                    if best.as_ref().is_none_or(|(b, _, _)| loss.mean < *b) {
                        best = Some((loss.mean, label, runs));
                    }
                    losses.push((k, loss));
                }
                if let Some((_, label, runs)) = best {
                    keep_models(notebook, "transfer", &label, &model, &task, &seeds, &runs)?;
                }
                sweeps.push(SweepAt {
                    param,
                    width,
                    losses,
                    diverged,
                });
            }
        }
        let measured = Measured {
            coords,
            sweeps,
            initial,
        };
        report(config, &measured, notebook)
    }
}

/// What the run measured: the coordinate checks, the rate sweeps, and chance, ln(classes), the
/// loss a diverged run counts at.
struct Measured {
    coords: Vec<Coord>,
    sweeps: Vec<SweepAt>,
    initial: f64,
}

/// Show, judge, summarise.
fn report(
    config: &MupCoordConfig,
    measured: &Measured,
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    show(config, measured, notebook)?;
    judge(config, measured, notebook);
    summarise(config, measured, notebook);
    Ok(())
}

/// The coordinate check (slopes per step, a chart per quantity) and the rate sweep (best rate
/// and loss per width, loss against the rate).
fn show(
    config: &MupCoordConfig,
    measured: &Measured,
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let (coords, sweeps, initial) = (&measured.coords, &measured.sweeps, measured.initial);
    let t_max = config.coord.steps;
    let widths = &config.coord.widths;
    let mut header = vec!["parametrisation".to_string(), "quantity".into()];
    header.extend((2..=t_max).map(|t| format!("t={t}")));
    header.push("mean".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "Coordinate check: log–log slope of each quantity against the width (d_model {}), after t Adam steps at lr {}; |slope| ≤ {FLAT} is flat",
            widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            config.coord.lr
        ),
        &header,
    );
    for c in coords {
        let mut row = vec![c.param.name().to_string(), c.quantity.clone()];
        row.extend(c.slopes.iter().map(|s| format!("{s:+.2}")));
        row.push(format!("{:+.2}", c.mean_slope()));
        table.row(row);
        let mut chart = LineChart::new(
            format!("{}: {} vs width", c.param.name(), c.quantity),
            "d_model",
            c.quantity.clone(),
        )
        .log_x()
        .log_y();
        for (t, points) in c.values.iter().enumerate() {
            chart = chart.line(
                format!("t = {}", t + 1),
                points
                    .iter()
                    .copied()
                    .filter(|(_, v)| v.is_finite() && *v > 0.0)
                    .collect(),
            );
        }
        notebook.plot(
            &format!("coord_{}_{}", c.param.key(), c.key),
            &format!("{} coordinate check: {}", c.param.name(), c.quantity),
            chart.to_svg(),
        )?;
    }
    notebook.table(table);

    let mut sweep_table = Table::new(
        format!(
            "Learning-rate sweep: held-out loss on {} sequences after {} Adam steps, mean over {} seed(s) (diverged = chance, {initial:.3})",
            config.transfer.eval_size, config.transfer.steps, config.run.seeds
        ),
        &[
            "parametrisation",
            "d_model",
            "best rate",
            "best loss",
            "loss per rate (log₂ rate: loss)",
            "diverged",
        ],
    );
    for param in Param::BOTH {
        let mut chart = LineChart::new(
            format!("{}: held-out loss vs learning rate", param.name()),
            "Adam learning rate",
            "held-out loss",
        )
        .log_x();
        for s in sweeps.iter().filter(|s| s.param == param) {
            let (k, loss) = s.best();
            sweep_table.row(vec![
                param.name().into(),
                s.width.to_string(),
                format!("2^{k}"),
                format!("{loss}"),
                s.losses
                    .iter()
                    .map(|(k, l)| format!("{k}: {:.3}", l.mean))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.diverged.to_string(),
            ]);
            chart = chart.line(
                format!("d_model = {}", s.width),
                s.losses
                    .iter()
                    .map(|(k, l)| (2f64.powi(*k), l.mean))
                    .collect(),
            );
        }
        notebook.plot(
            &format!("transfer_{}", param.key()),
            &format!(
                "{}: held-out loss vs learning rate, per width",
                param.name()
            ),
            chart.to_svg(),
        )?;
    }
    notebook.table(sweep_table);
    Ok(())
}

/// The coordinate check's verdicts (SP grows, µP stays flat, for the logits and every output),
/// then the transfer's (µP's best rate stays, SP's moves further).
fn judge(config: &MupCoordConfig, measured: &Measured, notebook: &mut Notebook) {
    let coords = &measured.coords;
    let t_max = config.coord.steps;
    let widths = &config.coord.widths;
    // The coordinate-check verdicts.
    let of = |param: Param| coords.iter().filter(move |c| c.param == param);
    let logits = |param: Param| of(param).next().expect("the logits come first");
    let (sp, mup) = (logits(Param::Sp), logits(Param::Mup));
    let range = format!("d_model {} → {}", widths[0], widths[widths.len() - 1]);
    // How far the logit std went from the narrowest to the widest model, at the last step.
    let evidence = |c: &Coord| {
        let last = &c.values[t_max - 1];
        format!(
            "{} slope {} over {range}; at t = {t_max} the std goes {:.3} → {:.3}",
            c.param.name(),
            c.slope_range(),
            last[0].1,
            last[last.len() - 1].1
        )
    };
    notebook.verdict(Verdict::new(
        format!("in SP the attention-logit std after t = 2…{t_max} steps grows with the width (log–log slope against the width, averaged over t, > {FLAT})"),
        sp.grows(),
        evidence(sp),
    ));
    notebook.verdict(Verdict::new(
        format!("in µP the attention-logit std stays flat across widths (|mean slope| ≤ {FLAT})"),
        mup.flat(),
        evidence(mup),
    ));
    let outputs = |param: Param| of(param).skip(1).collect::<Vec<_>>();
    let describe = |cs: &[&Coord]| {
        cs.iter()
            .map(|c| format!("{} {}", c.quantity, c.slope_range()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (sp_out, mup_out) = (outputs(Param::Sp), outputs(Param::Mup));
    notebook.verdict(Verdict::new(
        format!("in µP every layer's attention output and the readout stay flat too (|mean slope| ≤ {FLAT}), where SP's grow (> {FLAT})"),
        mup_out.iter().all(|c| c.flat()) && sp_out.iter().all(|c| c.grows()),
        format!("µP slopes: {}. SP slopes: {}", describe(&mup_out), describe(&sp_out)),
    ));

    // The transfer verdicts: the shift of the best rate from the narrowest to the widest model.
    // A width where no rate got below chance has no best rate, and no shift can be read.
    let shift = |param| best_rate_shift(config, measured, param);
    let (sp_shift, mup_shift) = (shift(Param::Sp), shift(Param::Mup));
    let (narrow, wide) = (
        config.transfer.widths[0],
        config.transfer.widths[config.transfer.widths.len() - 1],
    );
    let text = |s: &Result<(i32, String), String>| match s {
        Ok((_, t)) | Err(t) => t.clone(),
    };
    notebook.verdict(Verdict::new(
        format!("in µP the best learning rate moves by at most one factor of 2 from d_model {narrow} to {wide}"),
        matches!(mup_shift, Ok((k, _)) if k.abs() <= 1),
        text(&mup_shift),
    ));
    notebook.verdict(Verdict::new(
        "in SP the best learning rate moves further with the width than in µP",
        matches!((&sp_shift, &mup_shift), (Ok((s, _)), Ok((m, _))) if s.abs() > m.abs()),
        format!("{}; {}", text(&sp_shift), text(&mup_shift)),
    ));
}

/// How many factors of 2 the best rate of `param` moves from the narrowest to the widest model,
/// with the sentence saying so; or why no shift can be read (a width where no rate got below
/// chance, `initial`, has no best rate).
fn best_rate_shift(
    config: &MupCoordConfig,
    measured: &Measured,
    param: Param,
) -> Result<(i32, String), String> {
    let (sweeps, initial) = (&measured.sweeps, measured.initial);
    let (narrow, wide) = (
        config.transfer.widths[0],
        config.transfer.widths[config.transfer.widths.len() - 1],
    );
    let best_at = |param: Param, width: usize| {
        let (k, loss) = sweeps
            .iter()
            .find(|s| s.param == param && s.width == width)
            .expect("every width swept")
            .best();
        (loss.mean < initial).then_some(k)
    };
    let grid = &config.transfer.lr_log2;
    match (best_at(param, narrow), best_at(param, wide)) {
        (Some(a), Some(b)) => {
            let edge = [a, b]
                .iter()
                .any(|k| *k == grid[0] || *k == grid[grid.len() - 1]);
            Ok((
                b - a,
                format!(
                    "{} best rate 2^{a} at d_model {narrow}, 2^{b} at {wide}: {:+} factor(s) of 2{}",
                    param.name(),
                    b - a,
                    if edge {
                        " (a best rate at the edge of the grid: the optimum may lie beyond it)"
                    } else {
                        ""
                    }
                ),
            ))
        }
        _ => Err(format!(
            "{}: no rate got below chance ({initial:.3}) at d_model {}, so there is no best rate to compare",
            param.name(),
            if best_at(param, narrow).is_none() {
                narrow
            } else {
                wide
            }
        )),
    }
}

/// The coordinate slopes, the sweep and the best-rate shifts, for `summary.json`.
fn summarise(config: &MupCoordConfig, measured: &Measured, notebook: &mut Notebook) {
    let (coords, sweeps) = (&measured.coords, &measured.sweeps);
    notebook.summarize(
        "coord",
        coords
            .iter()
            .map(|c| {
                serde_json::json!({
                    "parametrisation": c.param.key(), "quantity": c.quantity,
                    "slopes": c.slopes, "mean_slope": c.mean_slope(), "values": c.values,
                })
            })
            .collect::<Vec<_>>(),
    );
    notebook.summarize(
        "transfer",
        sweeps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "parametrisation": s.param.key(), "d_model": s.width,
                    "best_lr_log2": s.best().0, "losses": s.losses, "diverged": s.diverged,
                })
            })
            .collect::<Vec<_>>(),
    );
    let shift = |param| best_rate_shift(config, measured, param);
    let (sp_shift, mup_shift) = (shift(Param::Sp), shift(Param::Mup));
    notebook.summarize(
        "best_rate_shift_factors_of_2",
        BTreeMap::from([
            ("sp", sp_shift.ok().map(|s| s.0)),
            ("mup", mup_shift.ok().map(|s| s.0)),
        ]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_step_is_left_out_of_the_slopes() {
        // µP at t = 1: exactly 0 at every width; from t = 2 a slope of 1.
        let values = vec![
            vec![(32.0, 0.0), (64.0, 0.0), (128.0, 0.0)],
            vec![(32.0, 1.0), (64.0, 2.0), (128.0, 4.0)],
        ];
        let slopes = slopes_from_t2(&values);
        assert_eq!(slopes.len(), 1);
        assert!((slopes[0] - 1.0).abs() < 1e-12, "{slopes:?}");
        let coord = Coord {
            param: Param::Mup,
            quantity: "q".into(),
            key: "q".into(),
            values,
            slopes,
        };
        // Counting t = 1 as a flat 0 would make this mean 0.5, "flat".
        assert!((coord.mean_slope() - 1.0).abs() < 1e-12);
        assert!(coord.grows() && !coord.flat());
    }

    #[test]
    fn widths_scale_the_base_model() {
        let mut model = ModelConfig::new(32, 2);
        model.d_ff = Some(64);
        let config = MupCoordConfig {
            run: RunConfig::default(),
            task: TaskConfig::new(crate::lab::tasks::TaskKind::Recall, 4, 4),
            model,
            coord: CoordCheck {
                widths: vec![32, 128],
                steps: 2,
                lr: 1e-2,
                batch_size: 4,
                adam_epsilon: 1e-8,
            },
            transfer: Transfer {
                widths: vec![32, 64],
                lr_log2: vec![-8, -6],
                steps: 4,
                batch_size: 4,
                log_every: 1,
                eval_size: 8,
                adam_epsilon: 1e-8,
                check_every_step: false,
            },
        };
        config.validate().unwrap();
        let mup = config.model_at(128, Param::Mup);
        assert_eq!((mup.d_model, mup.d_ff, mup.n_heads), (128, Some(256), 2));
        assert_eq!((mup.scale, mup.mup_base_width), (ScoreScale::Dk, Some(32)));
        let sp = config.model_at(128, Param::Sp);
        assert_eq!((sp.scale, sp.mup_base_width), (ScoreScale::SqrtDk, None));

        let mut bad = config.clone();
        bad.model.scale = ScoreScale::Dk;
        assert_eq!(bad.validate().unwrap_err().key, "model.scale");
        let mut bad = config.clone();
        bad.coord.widths = vec![32];
        assert!(bad.validate().unwrap_err().key.starts_with("coord.widths"));
        let mut bad = config;
        bad.transfer.widths = vec![32, 33];
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("width 33"), "{err}");
    }

    #[test]
    fn best_rate_is_the_lowest_mean_loss() {
        let s = |v: f64| Spread::of(&[v]);
        let sweep = SweepAt {
            param: Param::Mup,
            width: 32,
            losses: vec![(-10, s(1.0)), (-9, s(0.4)), (-8, s(0.6))],
            diverged: 0,
        };
        assert_eq!(sweep.best().0, -9);
    }
}
