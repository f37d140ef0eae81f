//! What an experiment sees: the [`Experiment`] trait it implements, the [`Notebook`] it measures
//! into (devices, progress, metrics, tables, plots, verdicts, models, training runs), and the
//! [`RunError`] that stops it. How a run is driven around it is [`crate::run::runner`]'s.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::prelude::Device;
use indicatif::ProgressBar;

use crate::block::attention::AttentionConfigError;
use crate::lab::checkpoint::{self, CheckpointError, ModelSpec};
use crate::lab::footprint::Footprint;
use crate::lab::model::TinyTransformer;
use crate::lab::tasks::TaskError;
use crate::lab::train::{TrainError, TrainJob, TrainRun};
use crate::output::plot::PlotError;
use crate::output::report::{MetricRow, Plot, RunStatus, Table, Verdict, WriteError, file_stem};
use crate::run::config::{ConfigError, ExperimentConfig};
use crate::run::shard::{ShardError, UnitKey, Units};
use crate::util::cores;
use crate::util::device::BackendError;
use crate::util::interrupt::Interrupted;
use crate::util::limits::TooLarge;

/// One demonstration.
pub trait Experiment {
    /// Binary, config and results-folder name, e.g. `scaling`.
    const NAME: &'static str;
    /// The claim in one line.
    const TITLE: &'static str;
    /// What is claimed and how it is tested, a paragraph for the report.
    const CLAIM: &'static str;
    type Config: ExperimentConfig;
    /// Whether its verdicts judge wall-clock time or peak memory, which another experiment
    /// running beside it would disturb: `reproduce --jobs` then runs it alone.
    const TIMED: bool = false;

    /// Units of progress the run will report through [`Notebook::advance`].
    fn work(config: &Self::Config) -> u64;

    /// The estimated peak memory of the run's largest piece (see [`crate::lab::footprint`]),
    /// checked against the machine before anything runs.
    fn footprint(config: &Self::Config) -> Footprint;

    /// Measures, and fills the notebook with metrics, tables, plots and verdicts.
    fn run(config: &Self::Config, notebook: &mut Notebook) -> Result<(), RunError>;
}

/// Anything that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] AttentionConfigError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A panic inside the experiment, caught: a bug, reported as one line.
    #[error("the experiment crashed ({0}); this is a bug in attention-lab")]
    Panicked(String),
    /// A panic on the remote backend: Burn's client panics when its server goes away mid-run.
    #[error(
        "lost the remote backend at {address} ({panic}): the server stopped or the connection broke"
    )]
    RemoteLost { address: String, panic: String },
    #[error("--out {out}: {reason}")]
    Out { out: PathBuf, reason: String },
    /// The run started and did not finish; what it measured is in `dir`.
    #[error("{source} (what was measured is in {}, status {status})", dir.display())]
    Incomplete {
        dir: PathBuf,
        status: RunStatus,
        source: Box<RunError>,
    },
}

/// What an experiment measures into, and its view of the run.
pub struct Notebook {
    /// The device without autodiff, for measurements.
    pub device: Device,
    /// The same device with autodiff, for gradients and training.
    pub autodiff: Device,
    pub metrics: Vec<MetricRow>,
    pub tables: Vec<Table>,
    pub plots: Vec<Plot>,
    pub verdicts: Vec<Verdict>,
    /// Notable events worth a line in the report, e.g. a run that diverged.
    pub findings: Vec<String>,
    /// Numbers for `summary.json`.
    pub summary: serde_json::Map<String, serde_json::Value>,
    /// Trained models for `models/`: (file stem, parameters, spec), see [`Notebook::keep_model`].
    pub models: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Which training runs are trained here: all of them, a shard's, or none (a merge reads
    /// them back).
    pub units: Units,
    progress: ProgressBar,
}

impl Notebook {
    pub fn new(device: Device, autodiff: Device, progress: ProgressBar) -> Self {
        Self {
            device,
            autodiff,
            metrics: Vec::new(),
            tables: Vec::new(),
            plots: Vec::new(),
            verdicts: Vec::new(),
            findings: Vec::new(),
            summary: serde_json::Map::new(),
            models: Vec::new(),
            units: Units::All,
            progress,
        }
    }

    /// Advances the progress bar by `n` units.
    pub fn advance(&self, n: u64) {
        self.progress.inc(n);
    }

    /// Shows what is running now, next to the bar.
    pub fn status(&self, message: impl Into<String>) {
        self.progress.set_message(message.into());
    }

    /// Prints a line above the bar (or plainly, when the bar is hidden).
    pub fn say(&self, line: impl AsRef<str>) {
        if self.progress.is_hidden() {
            println!("{}", line.as_ref());
        } else {
            self.progress.println(line.as_ref());
        }
    }

    pub fn metric(&mut self, row: MetricRow) {
        self.metrics.push(row);
    }

    /// Keeps a table for the report and prints it.
    pub fn table(&mut self, table: Table) {
        self.say(format!("\n{}\n", table.to_text()));
        self.tables.push(table);
    }

    /// Renders a plot now, so a drawing error surfaces where the data is.
    pub fn plot(
        &mut self,
        file: &str,
        title: &str,
        svg: Result<String, PlotError>,
    ) -> Result<(), RunError> {
        self.plots.push(Plot {
            file: file_stem(file),
            title: title.into(),
            svg: svg?,
        });
        Ok(())
    }

    /// Keeps a trained model, to be written as `models/<name>.bpk` and `models/<name>.json` in
    /// the run folder (read back with [`crate::lab::checkpoint::load`]).
    pub fn keep_model(
        &mut self,
        name: &str,
        model: &TinyTransformer,
        spec: &ModelSpec,
    ) -> Result<(), RunError> {
        let (record, spec) = checkpoint::to_bytes(model, spec)?;
        self.models.push((file_stem(name), record, spec));
        Ok(())
    }

    pub fn verdict(&mut self, verdict: Verdict) {
        self.verdicts.push(verdict);
    }

    pub fn finding(&mut self, line: impl Into<String>) {
        self.findings.push(line.into());
    }

    pub fn summarize(&mut self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).expect("summary values serialise");
        self.summary.insert(key.to_string(), value);
    }

    /// One training run, `job` as `part`/`label`: trained here, or, in a sharded sweep, read
    /// back or stood in for ([`Units::train`]), with the progress bar advanced by its steps
    /// either way. On a CPU backend it holds one of the process's cores while it trains
    /// ([`cores`]).
    pub fn train(
        &mut self,
        part: &str,
        label: &str,
        job: &TrainJob<'_>,
    ) -> Result<TrainRun, RunError> {
        self.status(format!("{part}: {label} seed {}", job.seed));
        let key = UnitKey::of(part, label, job);
        let progress = &self.progress;
        let _core = crate::util::device::is_host_cpu(&self.autodiff).then(cores::take);
        self.units
            .train(&key, job, &self.autodiff, &|n| progress.inc(n))
    }

    /// [`Self::train`] for each of `jobs` (one configuration at several seeds, or several
    /// configurations), returned in order. In an ordinary run on a CPU backend they train side by
    /// side: the runs of a tiny model are chains of small ops that keep one core busy, so two
    /// seeds on two cores take the time of one. Each run is the same as alone: its own model,
    /// data stream and device ops, none of which depends on what else is running.
    ///
    /// One worker per core takes the next job as it finishes one, and each run holds a core of
    /// the process's budget ([`cores`]) while it trains: three seeds on two cores keep one core
    /// free for a while, which another experiment running beside this one (`reproduce --jobs`)
    /// can use. A shard or a merge keeps the order its unit numbers follow, and a GPU backend
    /// trains one at a time.
    pub fn train_seeds(
        &mut self,
        part: &str,
        label: &str,
        jobs: &[TrainJob<'_>],
    ) -> Result<Vec<TrainRun>, RunError> {
        let workers = cores::count().min(jobs.len());
        if !matches!(self.units, Units::All)
            || !crate::util::device::is_host_cpu(&self.autodiff)
            || workers < 2
        {
            return jobs
                .iter()
                .map(|job| self.train(part, label, job))
                .collect();
        }
        let seeds: Vec<String> = jobs.iter().map(|j| j.seed.to_string()).collect();
        self.status(format!("{part}: {label} seeds {}", seeds.join(", ")));
        let (progress, device) = (&self.progress, &self.autodiff);
        let next = AtomicUsize::new(0);
        // After a failure no new run starts; those under way finish.
        let failed = AtomicBool::new(false);
        let slots: Vec<Mutex<Option<Result<TrainRun, TrainError>>>> =
            jobs.iter().map(|_| Mutex::new(None)).collect();
        let worker = || {
            loop {
                // Checked before taking an index, so that every job not run comes after every
                // job taken, the failed one among them.
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= jobs.len() {
                    return;
                }
                let job = &jobs[i];
                let run = {
                    let _core = cores::take();
                    let _stop = StopOnPanic(&failed);
                    let mut done = 0u64;
                    let run = job.run(device, &mut |_| {
                        done += 1;
                        progress.inc(1);
                    });
                    // A run that stopped early still owes the bar its remaining steps.
                    progress.inc((job.config.steps as u64).saturating_sub(done));
                    run
                };
                if run.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
            }
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
            for handle in handles {
                if let Err(panic) = handle.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        let mut runs = Vec::with_capacity(jobs.len());
        for slot in slots {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(run) => runs.push(run?),
                // Not started after a failure, which comes before it and was returned above.
                None => unreachable!("a job was skipped with no failure before it"),
            }
        }
        Ok(runs)
    }
}

/// Raises `failed` when dropped by a panic: a run that panicked stops the other workers taking
/// new jobs, as a failed one does, so that the panic is reported without waiting for the rest.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::model::ModelConfig;
    use crate::lab::tasks::{Task, TaskConfig, TaskKind};
    use crate::lab::train::TrainConfig;

    /// A job that cannot train ends the side-by-side runs with its error, whichever worker
    /// took it, and no job after it is waited for.
    #[test]
    fn a_failed_job_among_seeds_is_the_error_returned() {
        let device = Device::flex();
        let autodiff = device.clone().autodiff();
        let task = Task::new(TaskConfig::new(TaskKind::Reverse, 4, 6)).unwrap();
        let good = ModelConfig::new(16, 2);
        let bad = ModelConfig::new(16, 3); // 3 heads do not divide d_model = 16
        let config = TrainConfig::new(12, 8, 1e-2);
        let tasks = [task];
        let models = [&good, &bad, &good, &good, &good, &good];
        let jobs: Vec<TrainJob> = models
            .iter()
            .map(|model| TrainJob {
                model,
                tasks: &tasks,
                config: &config,
                seed: 1,
            })
            .collect();
        let mut notebook = Notebook::new(device, autodiff, ProgressBar::hidden());
        let err = notebook.train_seeds("train", "reverse", &jobs).unwrap_err();
        assert!(
            matches!(err, RunError::Train(TrainError::Model(_))),
            "got {err}"
        );
    }

    /// Seeds trained side by side give, to the bit, the runs each gives alone: losses, and the
    /// weights they end with.
    #[test]
    fn seeds_side_by_side_train_as_they_do_alone() {
        let device = Device::flex();
        let autodiff = device.clone().autodiff();
        let task = Task::new(TaskConfig::new(TaskKind::Reverse, 4, 6)).unwrap();
        let mut model = ModelConfig::new(16, 2);
        model.causal = true;
        let config = TrainConfig::new(12, 8, 1e-2);
        let tasks = [task];
        let jobs: Vec<TrainJob> = [3, 4, 5]
            .into_iter()
            .map(|seed| TrainJob {
                model: &model,
                tasks: &tasks,
                config: &config,
                seed,
            })
            .collect();
        let mut notebook = Notebook::new(device, autodiff.clone(), ProgressBar::hidden());
        let together = notebook.train_seeds("train", "reverse", &jobs).unwrap();
        assert_eq!(together.len(), jobs.len(), "one run per seed, in order");
        for (job, run) in jobs.iter().zip(&together) {
            let alone = job.run(&autodiff, &mut |_| {}).unwrap();
            let losses = |r: &TrainRun| r.records.iter().map(|x| x.loss).collect::<Vec<_>>();
            assert_eq!(losses(run), losses(&alone), "seed {}", job.seed);
            let head = |r: &TrainRun| {
                r.model
                    .head
                    .weight
                    .val()
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            };
            assert_eq!(head(run), head(&alone), "seed {}", job.seed);
        }
    }
}
