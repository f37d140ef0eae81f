//! The runner every experiment shares: it reads the config, builds the device, shows progress,
//! writes the results folder and prints the verdicts. An experiment supplies only what it
//! measures ([`Experiment::run`]), through a [`Notebook`].
//!
//! Order matters for "nothing lost, nothing half-made": the config, the backend, the memory
//! estimate and `--out` are checked before any folder exists, so a bad config leaves no trace;
//! once the run starts, the resolved config and a `summary.json` saying `running` are on disk
//! first, and whatever was measured is written even if the run fails, panics or is interrupted,
//! with the status saying which.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Command, FromArgMatches};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::lab::footprint::Footprint;
use crate::output::report::{ReportPage, RunDir, RunOutcome, RunStatus, WriteError, utc_stamp};
use crate::run::config::{ConfigError, ExperimentConfig, Loaded, load};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::shard::{Manifest, Shard, ShardError, Sweep, Units, check_sweep_id};
use crate::util::cli::finish;
use crate::util::device::BackendKind;
use crate::util::guard;
use crate::util::interrupt;
use crate::util::limits::{check_memory, human_bytes};

/// Where a run goes and what it runs on: the options every experiment binary and `reproduce`
/// share.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, remote (overrides the config's run.backend)
    #[arg(long)]
    pub backend: Option<String>,
    /// Base seed (overrides the config's run.seed)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Results root; a run goes to <DIR>/<experiment>/<run-id>/
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Run even when the estimated peak memory exceeds what the machine has available
    #[arg(long)]
    pub force: bool,
    /// Train only shard I of N of the sweep's training runs (0-based), or `auto` to read Slurm's
    /// SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT; needs --sweep-id. Merge the shards with
    /// `reproduce --merge <DIR>/<experiment>/<sweep-id>`
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// The sweep a shard belongs to, the same for every shard: shards write to
    /// <DIR>/<experiment>/<sweep-id>/shard-I-of-N/
    #[arg(long, value_name = "NAME")]
    pub sweep_id: Option<String>,
    /// Check the command and exit: parse it, load and validate the config, estimate the peak
    /// memory against the machine's; nothing is run or written (e.g. before submitting a job)
    #[arg(long)]
    pub check: bool,
}

impl RunOptions {
    /// The shard and sweep id, when this run is one shard of a sweep; both or neither must be
    /// given.
    pub fn sharding(&self) -> Result<Option<(Shard, String)>, ShardError> {
        match (&self.shard, &self.sweep_id) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ShardError::SweepIdAlone),
            (Some(_), None) => Err(ShardError::NeedsSweepId),
            (Some(shard), Some(id)) => {
                let shard = Shard::parse(shard)?;
                check_sweep_id(id)?;
                Ok(Some((shard, id.clone())))
            }
        }
    }
}

/// The options every experiment binary takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExperimentArgs {
    /// Config file [default: configs/<experiment>.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOptions,
    /// Override a config value, e.g. --set train.steps=100 (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ExperimentArgs {
    /// The config path: the one given, or `configs/<name>.toml`.
    pub fn config_path(&self, name: &str) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("configs/{name}.toml")))
    }

    /// `--set` values, then `--backend` and `--seed`, which win.
    pub fn overrides(&self) -> Vec<String> {
        let mut all = self.set.clone();
        all.extend(
            self.run
                .backend
                .iter()
                .map(|b| format!("run.backend={b:?}")),
        );
        all.extend(self.run.seed.iter().map(|s| format!("run.seed={s}")));
        all
    }
}

/// A progress bar on stderr, hidden when stdout is not a terminal.
pub fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stdout().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} eta {eta} {msg}")
                .expect("a valid template"),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// Loads and checks the config an experiment binary was given.
pub fn load_config<E: Experiment>(args: &ExperimentArgs) -> Result<Loaded<E::Config>, RunError> {
    Ok(load(&args.config_path(E::NAME), &args.overrides())?)
}

/// The whole `main` of an experiment binary: parse the flags, run, and exit 0, or 2 with one
/// line on any error (clap's own usage errors also exit 2).
pub fn main<E: Experiment>() -> ExitCode {
    // About after augmenting: `ExperimentArgs`' own doc comment would otherwise replace it.
    let command = ExperimentArgs::augment_args(Command::new(E::NAME))
        .about(E::TITLE)
        .version(env!("CARGO_PKG_VERSION"));
    let matches = command.get_matches();
    let args = ExperimentArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if args.run.check {
        return finish(check::<E>(&args));
    }
    finish(run::<E>(&args).map(|_| ()))
}

/// `--check`: everything a run checks before it starts (the config, the shard options, the
/// memory estimate, `--out`), with nothing run or written; prints what the run would ask for.
pub fn check<E: Experiment>(args: &ExperimentArgs) -> Result<(), RunError> {
    let loaded = load_config::<E>(args)?;
    args.run.sharding()?;
    let plan = plan::<E>(&loaded)?;
    check_memory(plan.footprint.bytes, &plan.footprint.what, args.run.force)?;
    check_out(&args.run.out)?;
    println!("{}", plan.describe(E::NAME, &loaded.path));
    Ok(())
}

/// Runs `E` as its binary does: load, check, run, write, print.
pub fn run<E: Experiment>(args: &ExperimentArgs) -> Result<RunOutcome, RunError> {
    let loaded = load_config::<E>(args)?;
    let progress = progress_bar(E::work(&loaded.config));
    let outcome = run_loaded::<E>(&loaded, &args.run, &progress);
    progress.finish_and_clear();
    let outcome = outcome?;
    print_outcome(&outcome);
    Ok(outcome)
}

/// What a config will ask of the machine, known before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Units of progress (see [`Experiment::work`]).
    pub work: u64,
    pub backend: BackendKind,
    pub footprint: Footprint,
}

impl Plan {
    /// One line for `--check`: the config, the backend, the work and the memory estimate.
    pub fn describe(&self, experiment: &str, config: &Path) -> String {
        format!(
            "{experiment}: {} checked: backend {}, {} units of work, estimated peak {} ({}); \
             nothing was run or written",
            config.display(),
            self.backend,
            self.work,
            human_bytes(self.footprint.bytes),
            self.footprint.what
        )
    }
}

/// The plan of `E` under `config` (whose backend name is already validated).
pub fn plan<E: Experiment>(loaded: &Loaded<E::Config>) -> Result<Plan, ConfigError> {
    let config = &loaded.config;
    let backend = config
        .run()
        .backend_kind()
        .map_err(|invalid| ConfigError::Invalid {
            path: loaded.path.clone(),
            invalid,
        })?;
    Ok(Plan {
        work: E::work(config),
        backend,
        footprint: E::footprint(config),
    })
}

/// Refuses a results root that lies inside a run folder (one holding `summary.json`): runs would
/// nest inside runs, and the index would lose them.
pub fn check_out(out: &Path) -> Result<(), RunError> {
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(out))
        .unwrap_or_else(|_| out.to_path_buf());
    if let Some(run) = absolute
        .ancestors()
        .find(|dir| dir.join("summary.json").is_file() && dir.join("config.toml").is_file())
    {
        return Err(RunError::Out {
            out: out.to_path_buf(),
            reason: format!(
                "it lies inside the run folder {}; give a results root instead, such as results",
                run.display()
            ),
        });
    }
    Ok(())
}

/// Runs `E` with a loaded config, writing under `options.out`, reporting progress on `progress`
/// (which may be shared with other runs: it is advanced, never finished, here). With `--shard`,
/// trains only the shard's units and stores them (see [`crate::run::shard`]).
pub fn run_loaded<E: Experiment>(
    loaded: &Loaded<E::Config>,
    options: &RunOptions,
    progress: &ProgressBar,
) -> Result<RunOutcome, RunError> {
    let sharding = options.sharding()?;
    let config = &loaded.config;
    let plan = plan::<E>(loaded)?;
    let kind = plan.backend;
    check_memory(plan.footprint.bytes, &plan.footprint.what, options.force)?;
    let device = kind.device()?;
    let autodiff = kind.autodiff_device()?;
    check_out(&options.out)?;
    let notebook = Notebook::new(device, autodiff, progress.clone());
    if let Some((shard, sweep_id)) = sharding {
        return run_shard::<E>(loaded, options, kind, notebook, shard, &sweep_id);
    }

    let dir = RunDir::create(&options.out, E::NAME)?;
    dir.write("config.toml", loaded.resolved.as_bytes())?;
    let summary = running_summary::<E>(&dir, kind, &loaded.path, &plan);
    write_summary(&dir, &summary)?;
    let (notebook, result, seconds) = run_guarded::<E>(config, kind, notebook);
    write_run::<E>(
        &dir,
        config,
        kind,
        notebook,
        result,
        seconds,
        summary,
        Vec::new(),
    )
}

/// `summary.json` as a run starts: what runs, where, and `running`, with this process's id.
fn running_summary<E: Experiment>(
    dir: &RunDir,
    kind: BackendKind,
    config: &Path,
    plan: &Plan,
) -> serde_json::Value {
    serde_json::json!({
        "experiment": E::NAME,
        "title": E::TITLE,
        "run_id": dir.id,
        "status": RunStatus::Running,
        "pid": std::process::id(),
        "started": utc_stamp(std::time::SystemTime::now()),
        "backend": kind.name(),
        "config": config.display().to_string(),
        "estimated_peak_bytes": plan.footprint.bytes,
    })
}

/// Runs the experiment, a panic caught as an error, and times it.
fn run_guarded<E: Experiment>(
    config: &E::Config,
    kind: BackendKind,
    mut notebook: Notebook,
) -> (Notebook, Result<(), RunError>, f64) {
    interrupt::install();
    let start = Instant::now();
    let result = guard::catch(|| E::run(config, &mut notebook)).unwrap_or_else(|panic| {
        Err(match kind {
            BackendKind::Remote => RunError::RemoteLost {
                address: crate::util::device::remote_address(),
                panic: panic.to_string(),
            },
            _ => RunError::Panicked(panic.to_string()),
        })
    });
    (notebook, result, start.elapsed().as_secs_f64())
}

fn write_summary(dir: &RunDir, summary: &serde_json::Value) -> Result<(), WriteError> {
    let json = serde_json::to_string_pretty(summary).expect("a summary serialises");
    dir.write("summary.json", json.as_bytes()).map(|_| ())
}

/// Writes what `lab` holds into `dir` whichever way the run ended, `summary.json` last, and
/// turns the result into the outcome (or an [`RunError::Incomplete`] naming the folder).
#[allow(clippy::too_many_arguments)] // one call per way of running; a struct would only rename them
fn write_run<E: Experiment>(
    dir: &RunDir,
    config: &E::Config,
    kind: BackendKind,
    notebook: Notebook,
    result: Result<(), RunError>,
    seconds: f64,
    mut summary: serde_json::Value,
    extra_lines: Vec<String>,
) -> Result<RunOutcome, RunError> {
    let status = match &result {
        Ok(()) => RunStatus::Complete,
        Err(_) if interrupt::requested() => RunStatus::Interrupted,
        Err(_) => RunStatus::Failed,
    };
    let error = result
        .as_ref()
        .err()
        .map(|e| format!("{e:#}").replace('\n', " "));
    // What was measured is kept whichever way the run ended.
    dir.write_metrics(&notebook.metrics)?;
    for plot in &notebook.plots {
        dir.write(&format!("{}.svg", plot.file), plot.svg.as_bytes())?;
    }
    for (stem, record, spec) in &notebook.models {
        dir.write(&format!("models/{stem}.bpk"), record)?;
        dir.write(&format!("models/{stem}.json"), spec)?;
    }
    let mut run_lines = vec![
        format!("backend: `{}`; seeds: {:?}", kind, config.run().seed_list()),
        format!("wall time: {seconds:.1} s"),
    ];
    run_lines.extend(extra_lines);
    run_lines.push(format!(
        "repeat: `cargo run --release --bin {} -- --config {}`",
        E::NAME,
        dir.path.join("config.toml").display()
    ));
    let page = ReportPage {
        experiment: E::NAME,
        title: E::TITLE,
        claim: E::CLAIM,
        verdicts: &notebook.verdicts,
        findings: &notebook.findings,
        tables: &notebook.tables,
        plots: &notebook.plots,
        run_lines: &run_lines,
        status,
        error: error.as_deref(),
    };
    dir.write("report.md", page.to_markdown().as_bytes())?;
    summary["status"] = serde_json::to_value(status).expect("a status serialises");
    summary["wall_seconds"] = seconds.into();
    summary["verdicts"] = serde_json::to_value(&notebook.verdicts).expect("verdicts serialise");
    summary["findings"] = notebook.findings.clone().into();
    summary["results"] = notebook.summary.clone().into();
    if let Some(error) = &error {
        summary["error"] = error.clone().into();
    }
    // Last, so that `complete` is only ever said of a folder that holds everything.
    write_summary(dir, &summary)?;
    if let Err(source) = result {
        return Err(RunError::Incomplete {
            dir: dir.path.clone(),
            status,
            source: Box::new(source),
        });
    }
    Ok(RunOutcome {
        experiment: E::NAME,
        title: E::TITLE,
        claim: E::CLAIM,
        backend: kind.name(),
        dir: dir.path.clone(),
        plots: notebook
            .plots
            .iter()
            .map(|p| (p.file.clone(), p.title.clone()))
            .collect(),
        verdicts: notebook.verdicts,
        findings: notebook.findings,
        seconds,
    })
}

/// One shard of a sweep: trains the shard's units into
/// `<out>/<experiment>/<sweep-id>/shard-I-of-N/` and nothing else. A shard folder that exists
/// with the same config is resumed (its stored units are read back); one with another config is
/// refused.
fn run_shard<E: Experiment>(
    loaded: &Loaded<E::Config>,
    options: &RunOptions,
    kind: BackendKind,
    mut notebook: Notebook,
    shard: Shard,
    sweep_id: &str,
) -> Result<RunOutcome, RunError> {
    let sweep_dir = options.out.join(E::NAME).join(sweep_id);
    let refuse = |dir: &Path, reason: &str| {
        RunError::Shard(ShardError::Sweep {
            dir: dir.to_path_buf(),
            reason: reason.into(),
        })
    };
    if sweep_dir.join("summary.json").is_file() {
        return Err(refuse(
            &sweep_dir,
            "this sweep is already merged; give a new --sweep-id",
        ));
    }
    let folder = sweep_dir.join(shard.folder());
    let config_path = folder.join("config.toml");
    if folder.join(crate::run::shard::MANIFEST).is_file() {
        Manifest::read(&folder)?;
        let before = std::fs::read_to_string(&config_path).unwrap_or_default();
        if before != loaded.resolved {
            return Err(refuse(
                &folder,
                "this shard was started with another config; give a new --sweep-id, or delete the \
                 folder to start the shard over",
            ));
        }
    }
    let dir = RunDir {
        path: folder.clone(),
        id: sweep_id.to_string(),
    };
    dir.write("config.toml", loaded.resolved.as_bytes())?;
    let mut manifest = Manifest {
        experiment: E::NAME.into(),
        sweep_id: sweep_id.into(),
        shard: shard.index,
        shards: shard.count,
        status: RunStatus::Running,
        backend: kind.name().into(),
        started: utc_stamp(std::time::SystemTime::now()),
        units_total: 0,
        units: Vec::new(),
        trained: 0,
        wall_seconds: 0.0,
        error: None,
    };
    manifest.write(&folder)?;
    notebook.units = Units::shard(shard, folder.clone());
    let (notebook, result, seconds) = run_guarded::<E>(&loaded.config, kind, notebook);
    let status = match &result {
        Ok(()) => RunStatus::Complete,
        Err(_) if interrupt::requested() => RunStatus::Interrupted,
        Err(_) => RunStatus::Failed,
    };
    if let Units::Shard {
        stored,
        trained,
        next,
        ..
    } = &notebook.units
    {
        manifest.units = stored.clone();
        manifest.units.sort_unstable();
        manifest.trained = *trained;
        manifest.units_total = *next;
    }
    manifest.status = status;
    manifest.wall_seconds = seconds;
    manifest.error = result
        .as_ref()
        .err()
        .map(|e| format!("{e:#}").replace('\n', " "));
    manifest.write(&folder)?;
    if let Err(source) = result {
        return Err(RunError::Incomplete {
            dir: folder,
            status,
            source: Box::new(source),
        });
    }
    let reused = manifest.units.len() - manifest.trained;
    Ok(RunOutcome {
        experiment: E::NAME,
        title: E::TITLE,
        claim: E::CLAIM,
        backend: kind.name(),
        dir: folder,
        plots: Vec::new(),
        verdicts: Vec::new(),
        findings: vec![format!(
            "shard {} of {} (0-based): {} of the sweep's {} training runs are stored here ({} \
             trained now{}); the verdicts come from the merge: `reproduce --merge {}` once \
             every shard is done",
            shard.index,
            shard.count,
            manifest.units.len(),
            manifest.units_total,
            manifest.trained,
            if reused > 0 {
                format!(", {reused} read back from an earlier attempt")
            } else {
                String::new()
            },
            sweep_dir.display()
        )],
        seconds,
    })
}

/// Merges the checked sweep `sweep` (see [`crate::run::shard::open_sweep`]) into one run folder,
/// the sweep folder itself: `E` runs once more with every training run read back from the
/// shards, so the metrics, plots, models and verdicts are those of one unsharded run. Only
/// `options.backend` applies (the device the analysis runs on). Nothing is written unless the
/// whole merge succeeds.
pub fn merge<E: Experiment>(
    sweep: &Sweep,
    options: &RunOptions,
    progress: &ProgressBar,
) -> Result<RunOutcome, RunError> {
    let refuse = |reason: String| {
        RunError::Shard(ShardError::Sweep {
            dir: sweep.dir.clone(),
            reason,
        })
    };
    if sweep.experiment != E::NAME {
        return Err(refuse(format!(
            "its shards are of {}, not {}",
            sweep.experiment,
            E::NAME
        )));
    }
    if options.seed.is_some() || options.shard.is_some() || options.sweep_id.is_some() {
        return Err(refuse(
            "--seed, --shard and --sweep-id do not apply to a merge: the shards fixed them".into(),
        ));
    }
    let overrides: Vec<String> = options
        .backend
        .iter()
        .map(|b| format!("run.backend={b:?}"))
        .collect();
    let loaded = load::<E::Config>(&sweep.config, &overrides)?;
    let plan = plan::<E>(&loaded)?;
    let kind = plan.backend;
    check_memory(plan.footprint.bytes, &plan.footprint.what, options.force)?;
    let mut notebook = Notebook::new(kind.device()?, kind.autodiff_device()?, progress.clone());
    notebook.units = Units::Merge {
        units: sweep.units.clone(),
        next: 0,
    };
    let (notebook, result, seconds) = run_guarded::<E>(&loaded.config, kind, notebook);
    result?;
    if notebook.units.asked() != sweep.units.len() {
        return Err(refuse(format!(
            "the shards hold {} training runs, but the experiment asked for {}: the shards were \
             run with another version of attention-lab",
            sweep.units.len(),
            notebook.units.asked()
        )));
    }
    let dir = RunDir {
        path: sweep.dir.clone(),
        id: sweep.sweep_id.clone(),
    };
    dir.write("config.toml", loaded.resolved.as_bytes())?;
    let mut summary = running_summary::<E>(&dir, kind, &sweep.config, &plan);
    summary["sweep"] = serde_json::json!({
        "shards": sweep.shards,
        "training_runs": sweep.units.len(),
        "shard_backend": sweep.backend,
        "shard_wall_seconds": sweep.wall_seconds,
    });
    let shard_seconds: Vec<String> = sweep
        .wall_seconds
        .iter()
        .map(|s| format!("{s:.1}"))
        .collect();
    let lines = vec![format!(
        "merged from {} shards of sweep `{}` ({} training runs, trained on `{}`; shard wall \
         times {} s)",
        sweep.shards,
        sweep.sweep_id,
        sweep.units.len(),
        sweep.backend,
        shard_seconds.join(", ")
    )];
    write_run::<E>(
        &dir,
        &loaded.config,
        kind,
        notebook,
        Ok(()),
        seconds,
        summary,
        lines,
    )
}

/// The verdicts, findings, wall time and folder of a run, on stdout.
pub fn print_outcome(outcome: &RunOutcome) {
    println!("\n{}: {}", outcome.experiment, outcome.title);
    for v in &outcome.verdicts {
        println!("  {v}");
    }
    for f in &outcome.findings {
        println!("  finding: {f}");
    }
    println!("wall time: {:.1} s", outcome.seconds);
    println!("results: {}", outcome.dir.display());
}
