//! `mqar`: softmax attention recalls every key it was given; linear attention runs out of state.
//!
//! Multi-query associative recall (Arora et al. 2023, "Zoology: Measuring and Improving Recall in
//! Efficient Language Models", §3): P (key, value) pairs, then every key again as a query, each
//! answered with its value (`mqar`, see [`crate::lab::tasks`]). Softmax attention can look each
//! key up among the pairs, so it solves the task at any width. Linear attention (Katharopoulos et
//! al. 2020; [`crate::block::kernel`]) reads the past through a running d_k × d_v state, and a
//! fixed-size state holds only so many pairs: Zoology finds that the gap opens as the pairs grow
//! and narrows as the model widens.
//!
//! The grid is every width × every number of pairs × both kernels, each trained at every seed
//! and measured by its accuracy on held-out sequences. Every grid point is one training run per
//! seed, so the grid splits over `--shard` processes and merges back (see `docs/cluster.md`).

use serde::{Deserialize, Serialize};

use crate::block::kernel::Kernel;
use crate::lab::evaluate::{eval_batch, held_out_accuracy};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::Spread;
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig, TaskKind};
use crate::lab::train::TrainConfig;
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{Invalid, RunConfig, Validate, experiment_config, positive, validate_in};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{keep_models, run_side_by_side};

/// `configs/mqar.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqarConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Must be `mqar`; `length` must be the largest entry of `pairs` (each grid point sets its
    /// own), and `keys` and `symbols` must cover it.
    pub task: TaskConfig,
    /// The model at every grid point; `d_model` is set by `widths` and `kernel` by the
    /// experiment.
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Held-out sequences each grid point is measured on.
    pub eval_size: usize,
    /// The models' widths, d_model.
    pub widths: Vec<usize>,
    /// The numbers of key–value pairs, P.
    pub pairs: Vec<usize>,
    /// Held-out accuracy that counts as recall (Zoology's plots reach for 0.9 and above).
    pub solved: f64,
    /// A change in accuracy counts when it exceeds this (and twice the standard error of the
    /// difference over seeds).
    pub margin: f64,
}

impl MqarConfig {
    fn model_at(&self, width: usize, kernel: Kernel) -> ModelConfig {
        ModelConfig {
            d_model: width,
            kernel,
            ..self.model.clone()
        }
    }

    fn task_at(&self, pairs: usize) -> TaskConfig {
        TaskConfig {
            length: pairs,
            ..self.task.clone()
        }
    }
}

impl Validate for MqarConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        if !matches!(self.task.kind, TaskKind::Mqar | TaskKind::MqarPaired) {
            return Err(Invalid::new(
                "task.kind",
                format!(
                    "must be \"mqar\" or \"mqar-paired\", got \"{}\"",
                    self.task.kind
                ),
            ));
        }
        for (key, list) in [("widths", &self.widths), ("pairs", &self.pairs)] {
            if list.len() < 2 {
                return Err(Invalid::new(
                    key,
                    "needs at least two entries: the claims compare them",
                ));
            }
            if !list.is_sorted_by(|a, b| a < b) {
                return Err(Invalid::new(key, "must be strictly increasing"));
            }
        }
        let most = *self.pairs.last().expect("two entries");
        if self.task.length != most {
            return Err(Invalid::new(
                "task.length",
                format!(
                    "must be the largest entry of `pairs`, {most} (each grid point sets its own), got {}",
                    self.task.length
                ),
            ));
        }
        validate_in("task", &self.task)?;
        for &pairs in &self.pairs {
            validate_in("task", &self.task_at(pairs))
                .map_err(|e| Invalid::new(e.key, format!("{} (at {pairs} pairs)", e.reason)))?;
        }
        if self.model.kernel != Kernel::Softmax {
            return Err(Invalid::new(
                "model.kernel",
                "is set by the experiment (it compares softmax and linear); leave it out",
            ));
        }
        for &width in &self.widths {
            for kernel in Kernel::ALL {
                validate_in("model", &self.model_at(width, kernel)).map_err(|e| {
                    Invalid::new(
                        e.key,
                        format!("{} (at width {width}, kernel {kernel})", e.reason),
                    )
                })?;
            }
        }
        validate_in("train", &self.train)?;
        crate::run::config::at_least("eval_size", self.eval_size, 1)?;
        for (key, value) in [("solved", self.solved), ("margin", self.margin)] {
            positive(key, value)?;
            if value >= 1.0 {
                return Err(Invalid::new(key, format!("must be below 1, got {value}")));
            }
        }
        Ok(())
    }
}

experiment_config!(MqarConfig);

/// One grid point over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub kernel: Kernel,
    pub width: usize,
    pub pairs: usize,
    /// Held-out accuracy per seed.
    pub accuracy: Vec<f64>,
}

impl Point {
    fn spread(&self) -> Spread {
        Spread::of(&self.accuracy)
    }

    fn label(&self) -> String {
        format!("{} d={} P={}", self.kernel, self.width, self.pairs)
    }
}

/// The experiment.
pub struct Mqar;

impl Experiment for Mqar {
    const NAME: &'static str = "mqar";
    const TITLE: &'static str =
        "softmax attention recalls every pair; linear attention needs width as the pairs grow";
    const CLAIM: &'static str = "On multi-query associative recall (Arora et al. 2023, Zoology), \
        softmax attention reaches high accuracy at every model width, while linear attention \
        (Katharopoulos et al. 2020), which compresses the past into a d × d state, loses \
        accuracy as the number of key–value pairs grows at a fixed width and recovers it as the \
        width grows. Both kernels are trained on a grid of widths × pairs at several seeds and \
        measured on held-out sequences.";
    type Config = MqarConfig;

    fn footprint(config: &MqarConfig) -> Footprint {
        let widest = *config.widths.last().expect("two widths");
        let batch = config.train.batch_size.max(config.eval_size);
        footprint::training_on(
            &config.model_at(widest, Kernel::Softmax),
            &config.task,
            batch,
        )
    }

    fn work(config: &MqarConfig) -> u64 {
        (Kernel::ALL.len()
            * config.widths.len()
            * config.pairs.len()
            * config.run.seeds
            * config.train.steps) as u64
    }

    fn run(config: &MqarConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let seeds = config.run.seed_list();
        let mut points = Vec::new();
        for &pairs in &config.pairs {
            let task = Task::new(config.task_at(pairs))?;
            let batch = eval_batch(&task, config.eval_size, config.run.seed);
            for &width in &config.widths {
                // Both kernels of a grid point train side by side, one per core.
                let models: Vec<(String, ModelConfig)> = Kernel::ALL
                    .iter()
                    .map(|&kernel| {
                        (
                            format!("{kernel}-d{width}-p{pairs}"),
                            config.model_at(width, kernel),
                        )
                    })
                    .collect();
                let trained =
                    run_side_by_side(notebook, "mqar", &models, &task, &config.train, &seeds)?;
                for ((kernel, (label, model)), runs) in Kernel::ALL.iter().zip(&models).zip(trained)
                {
                    // Every grid point's models, for the explorer: softmax and linear side by side.
                    keep_models(notebook, "mqar", label, model, &task, &seeds, &runs)?;
                    let accuracy: Vec<f64> = runs
                        .runs
                        .iter()
                        .map(|run| held_out_accuracy(run, &task, &batch, &notebook.device))
                        .collect();
                    for (&seed, &a) in seeds.iter().zip(&accuracy) {
                        notebook
                            .metric(MetricRow::new("held_out", label, "accuracy", a).seed(seed));
                    }
                    let point = Point {
                        kernel: *kernel,
                        width,
                        pairs,
                        accuracy,
                    };
                    notebook.say(format!(
                        "{}: held-out accuracy {}",
                        point.label(),
                        point.spread()
                    ));
                    points.push(point);
                }
            }
        }
        table(config, &points, notebook);
        plot(config, &points, notebook)?;
        judge(config, &points, notebook);
        notebook.summarize("points", &points);
        Ok(())
    }
}

fn find(points: &[Point], kernel: Kernel, width: usize, pairs: usize) -> &Point {
    points
        .iter()
        .find(|p| p.kernel == kernel && p.width == width && p.pairs == pairs)
        .expect("every grid point is trained")
}

fn table(config: &MqarConfig, points: &[Point], notebook: &mut Notebook) {
    let headers: Vec<String> = std::iter::once("kernel, width".to_string())
        .chain(config.pairs.iter().map(|p| format!("P = {p}")))
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "Held-out accuracy on {} sequences per grid point (P pairs, then the P keys as queries), mean ± std over {} seed(s); chance is 1/{}, and a model that answers with one of the P values in context at random scores 1/P",
            config.eval_size, config.run.seeds, config.task.symbols
        ),
        &headers,
    );
    for kernel in Kernel::ALL {
        for &width in &config.widths {
            let mut row = vec![format!("{kernel}, d_model = {width}")];
            row.extend(
                config
                    .pairs
                    .iter()
                    .map(|&p| format!("{}", find(points, kernel, width, p).spread())),
            );
            table.row(row);
        }
    }
    notebook.table(table);
}

fn plot(config: &MqarConfig, points: &[Point], notebook: &mut Notebook) -> Result<(), RunError> {
    let mut chart = LineChart::new(
        "Held-out accuracy against the number of key–value pairs (mean over seeds)",
        "pairs P",
        "accuracy",
    );
    for kernel in Kernel::ALL {
        for &width in &config.widths {
            let (line, errors) = config
                .pairs
                .iter()
                .map(|&p| {
                    let s = find(points, kernel, width, p).spread();
                    ((p as f64, s.mean), (s.mean - s.std, s.mean + s.std))
                })
                .unzip();
            chart = chart.line_with_errors(format!("{kernel}, d = {width}"), line, errors);
        }
    }
    let (lo, hi) = (
        *config.pairs.first().expect("two") as f64,
        *config.pairs.last().expect("two") as f64,
    );
    chart = chart.reference(
        format!("{}", config.solved),
        vec![(lo, config.solved), (hi, config.solved)],
    );
    notebook.plot(
        "accuracy_vs_pairs",
        "Accuracy against pairs, one line per kernel and width",
        chart.to_svg(),
    )
}

/// Whether `a` is below `b` by more than the margin and the seeds' noise.
fn clearly_below(config: &MqarConfig, a: &Point, b: &Point) -> bool {
    let (a, b) = (a.spread(), b.spread());
    b.mean - a.mean > config.margin && (a.n < 2 || a.clearly_below(&b))
}

fn judge(config: &MqarConfig, points: &[Point], notebook: &mut Notebook) {
    let solved = config.solved;
    let softmax: Vec<&Point> = points
        .iter()
        .filter(|p| p.kernel == Kernel::Softmax)
        .collect();
    let short = |p: &Point| format!("d={} P={}: {}", p.width, p.pairs, p.spread());
    let missed: Vec<String> = softmax
        .iter()
        .filter(|p| p.spread().mean < solved)
        .map(|p| short(p))
        .collect();
    let worst = softmax
        .iter()
        .min_by(|a, b| a.spread().mean.total_cmp(&b.spread().mean))
        .expect("a grid");
    notebook.verdict(Verdict::new(
        format!("softmax attention reaches {solved} held-out accuracy at every grid point"),
        missed.is_empty(),
        if missed.is_empty() {
            format!("lowest: {}", short(worst))
        } else {
            format!(
                "below {solved} at {} of {} points: {}",
                missed.len(),
                softmax.len(),
                missed.join("; ")
            )
        },
    ));

    let (fewest, most) = (config.pairs[0], *config.pairs.last().expect("two"));
    let falls: Vec<(usize, bool, String)> = config
        .widths
        .iter()
        .map(|&w| {
            let (a, b) = (
                find(points, Kernel::Linear, w, fewest),
                find(points, Kernel::Linear, w, most),
            );
            (
                w,
                clearly_below(config, b, a),
                format!(
                    "d={w}: {} at P={fewest} → {} at P={most}",
                    a.spread(),
                    b.spread()
                ),
            )
        })
        .collect();
    notebook.verdict(Verdict::new(
        format!(
            "linear attention's accuracy falls as the pairs grow from {fewest} to {most}, at every width"
        ),
        falls.iter().all(|f| f.1),
        format!(
            "{}; a fall counts above {} (and twice the standard error of the difference over seeds)",
            falls
                .iter()
                .map(|f| f.2.clone())
                .collect::<Vec<_>>()
                .join("; "),
            config.margin
        ),
    ));

    // How many pairs each linear width recalls: the largest P of the grid at which it reaches
    // `solved` (0 when none).
    let recalled = |w: usize| {
        config
            .pairs
            .iter()
            .copied()
            .filter(|&p| find(points, Kernel::Linear, w, p).spread().mean >= solved)
            .max()
            .unwrap_or(0)
    };
    let (narrow, wide) = (config.widths[0], *config.widths.last().expect("two"));
    let capacity: Vec<String> = config
        .widths
        .iter()
        .map(|&w| format!("d={w}: {}", recalled(w)))
        .collect();
    let claim = format!(
        "linear attention recovers with width: the widest linear model (d = {wide}) recalls more pairs at {solved} accuracy than the narrowest (d = {narrow})"
    );
    let evidence = format!(
        "the largest P recalled at {solved} by each linear width: {} (0: none of {:?})",
        capacity.join(", "),
        config.pairs
    );
    notebook.verdict(if recalled(narrow) == most {
        Verdict::inconclusive(
            claim,
            format!("{evidence}: the narrowest linear model already recalls every P of the grid, so there is nothing to recover"),
        )
    } else {
        Verdict::new(claim, recalled(wide) > recalled(narrow), evidence)
    });
}
