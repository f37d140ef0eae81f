//! `reproduce`: every experiment (or a chosen few) with its config, on one progress bar, then
//! one index over all of them.
//!
//! Every config is loaded and checked before anything runs, so a typo stops the whole job at
//! once, with no folder written. An experiment that fails later does not stop the others: its
//! error goes into the index and the job exits non-zero at the end. A NOT CONFIRMED verdict is a
//! result, not an error.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use indicatif::ProgressBar;

use crate::output::index::{IndexPage, Ran};
use crate::output::published::{BLOCK_BEGIN, BLOCK_END, BlockError, Publication, SeedRun};
use crate::output::report::RunStatus;
use crate::output::report::{Table, WriteError, utc_stamp};
use crate::run::experiment::RunError;
use crate::run::registry::{Entry, find};
use crate::run::runner::{ExperimentArgs, RunOptions, check_out, print_outcome, progress_bar};
use crate::run::shard::{ShardError, Sweep, open_sweep};
use crate::util::device::BackendKind;
use crate::util::interrupt;
use crate::util::limits::check_memory;
use crate::util::provenance::Provenance;

/// `reproduce`'s command line.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "reproduce",
    version,
    about = "Run every attention-lab experiment (or the ones named) and write results/index.md and results/index.html"
)]
pub struct ReproduceArgs {
    /// Experiments to run, in this order [default: all]
    #[arg(value_name = "EXPERIMENT")]
    pub names: Vec<String>,
    /// Folder holding <experiment>.toml for each experiment
    #[arg(long, value_name = "DIR", default_value = "configs")]
    pub configs: PathBuf,
    // Applied to every experiment; the index goes to <out>/index.md and <out>/index.html.
    #[command(flatten)]
    pub run: RunOptions,
    /// List the experiments and exit
    #[arg(long)]
    pub list: bool,
    /// Experiments run side by side, each on its own thread, on a CPU backend [default: one per
    /// core]. However many run, at most one training run per core trains at a time: the others
    /// wait for a core, so a core one experiment leaves idle goes to another. Each run is the same
    /// as alone (its own models, data and device ops), so the results are bit-identical to
    /// `--jobs 1`; experiments that judge time or memory (`complexity`) run alone. Their wall
    /// times overlap, so only the total is the job's time.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Merge a sweep's shards, <out>/<experiment>/<sweep-id>, into one run folder there, instead
    /// of running anything (repeatable; every sweep is checked before the first merge)
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["names", "list"])]
    pub merge: Vec<PathBuf>,
    /// Run at every --seeds base seed (run folders under <out>/seed-<N>), then write the
    /// published results into DIR: <experiment>.md with each claim's tally over the seeds, the
    /// plots, and README.md with the commit, machine and wall times
    #[arg(long, value_name = "DIR", conflicts_with_all = ["merge", "list", "seed", "shard", "sweep_id"])]
    pub publish: Option<PathBuf>,
    /// The base seeds --publish runs at [default: 0,10,20]
    #[arg(
        long,
        value_name = "SEED,…",
        value_delimiter = ',',
        requires = "publish"
    )]
    pub seeds: Vec<u64>,
    /// With --publish, also replace the claims-at-a-glance block in FILE (the README), between
    /// its two marker lines
    #[arg(long, value_name = "FILE", requires = "publish")]
    pub readme: Option<PathBuf>,
}

/// Why `reproduce` stopped or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error("unknown experiment '{name}': expected one of {expected}")]
    Unknown { name: String, expected: String },
    #[error("{experiment}: {source}")]
    Config {
        experiment: &'static str,
        source: crate::run::config::ConfigError,
    },
    /// A backend, the memory or `--out` that rules out the whole job, found before it starts.
    #[error("{experiment}: {source}")]
    Unfit {
        experiment: &'static str,
        source: RunError,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("--jobs must be at least 1 (one experiment at a time), got 0")]
    NoJobs,
    #[error("--seeds {seeds}: {reason}")]
    Seeds { seeds: String, reason: &'static str },
    #[error("{} of {total} experiments did not complete: {}", failed.len(), failed.join("; "))]
    Failed { failed: Vec<String>, total: usize },
    #[error(
        "every experiment failed, so {} was left as it was (the last complete index): {}",
        kept.display(), failed.join("; ")
    )]
    AllFailed { kept: PathBuf, failed: Vec<String> },
}

/// The experiments of `all` named in `names` (all when none are), in the order given.
pub fn select(all: &[Entry], names: &[String]) -> Result<Vec<Entry>, ReproduceError> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| {
            find(all, n).ok_or_else(|| ReproduceError::Unknown {
                name: n.clone(),
                expected: all.iter().map(|e| e.name).collect::<Vec<_>>().join(", "),
            })
        })
        .collect()
}

/// What one `reproduce` run did.
#[derive(Debug, Clone)]
pub struct Reproduced {
    pub runs: Vec<Ran>,
    pub index_md: PathBuf,
    pub index_html: PathBuf,
    pub seconds: f64,
}

/// Runs the selection from `all` (the binary passes `experiments::ALL`), writes the index, prints
/// the final table.
pub fn run(args: &ReproduceArgs, all: &[Entry]) -> Result<Reproduced, ReproduceError> {
    if args.list {
        for e in all {
            println!("{:<16} {}", e.name, e.title);
        }
        return Ok(Reproduced {
            runs: Vec::new(),
            index_md: PathBuf::new(),
            index_html: PathBuf::new(),
            seconds: 0.0,
        });
    }
    if args.jobs == Some(0) {
        return Err(ReproduceError::NoJobs);
    }
    if !args.merge.is_empty() {
        return merge(args, all);
    }
    if let Some(dir) = &args.publish {
        return publish(args, all, dir);
    }
    let sharded = args.run.sharding()?.is_some();
    let entries = select(all, &args.names)?;
    let mut planned = Vec::with_capacity(entries.len());
    let mut total = 0;
    let mut backends = Vec::new();
    // With --check, each experiment's line; no backend is started (a login node may have none).
    let mut checked = Vec::new();
    for entry in entries {
        let exp_args = ExperimentArgs {
            config: Some(args.configs.join(format!("{}.toml", entry.name))),
            run: args.run.clone(),
            set: Vec::new(),
        };
        let plan = (entry.plan)(&exp_args.config_path(entry.name), &exp_args.overrides()).map_err(
            |source| ReproduceError::Config {
                experiment: entry.name,
                source,
            },
        )?;
        // Every experiment's limits before the first one runs: a job that cannot finish
        // should not spend an hour finding out.
        let unfit = |source: RunError| ReproduceError::Unfit {
            experiment: entry.name,
            source,
        };
        check_memory(plan.footprint.bytes, &plan.footprint.what, args.run.force)
            .map_err(|e| unfit(e.into()))?;
        if args.run.check {
            checked.push(plan.describe(entry.name, &exp_args.config_path(entry.name)));
        } else if !backends.contains(&plan.backend) {
            // Each backend once, and before anything is written: an unusable one would
            // otherwise fail every experiment in turn.
            plan.backend
                .device()
                .and_then(|_| plan.backend.autodiff_device())
                .map_err(|e| unfit(e.into()))?;
            backends.push(plan.backend);
        }
        total += plan.work;
        planned.push((entry, exp_args));
    }
    check_out(&args.run.out).map_err(|source| ReproduceError::Unfit {
        experiment: "reproduce",
        source,
    })?;
    if args.run.check {
        for line in checked {
            println!("{line}");
        }
        return ended(Vec::new(), 0.0, PathBuf::new(), PathBuf::new());
    }

    let started = Instant::now();
    let bar = progress_bar(total);
    // A shard's units must run in their order; a GPU runs one thing well at a time.
    let side_by_side = !sharded
        && backends
            .iter()
            .all(|b| matches!(b, BackendKind::Flex | BackendKind::Ndarray));
    let jobs = if side_by_side { args.jobs() } else { 1 };
    let runs = run_all(&planned, jobs, &bar);
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if sharded {
        // A shard's outcomes are training runs stored for the merge: no verdicts, no index.
        return ended(runs, seconds, PathBuf::new(), PathBuf::new());
    }
    write_index(args, runs, seconds, &args.run.out, &command_line(args))
}

impl ReproduceArgs {
    /// `--jobs`, or one per core. One experiment alone leaves cores idle whenever its runs do
    /// not divide among them (three seeds on two cores, an evaluation between trainings); with
    /// as many experiments as cores in flight, and each training run holding a core
    /// ([`crate::util::cores`]), another experiment's run takes the idle core. Measured on 2
    /// cores with the twelve experiments of `scaling` … `complexity`, alternated: 126.8 and 125.8 s
    /// with `--jobs 1`, 108.0 and 113.3 s with `--jobs 2`, and the same metrics to the bit.
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(crate::util::cores::count)
    }
}

/// Runs every planned experiment, up to `jobs` at a time (a timed one alone), and returns what
/// each did in the planned order. Each prints its header as it starts and its outcome as it ends.
/// (Started largest first instead of in the planned order, twelve experiments took as long on 2
/// cores with `--jobs 2`: 108.6 and 110.8 s against 107.1 and 108.2 s, alternated. The core
/// budget already lets the second experiment fill the first's idle core: user time was 1.85
/// times the wall time.)
fn run_all(planned: &[(Entry, ExperimentArgs)], jobs: usize, bar: &ProgressBar) -> Vec<Ran> {
    let total = planned.len();
    let one = |i: usize| -> Ran {
        let (entry, exp_args) = &planned[i];
        if interrupt::requested() {
            return Ran::NotRun {
                experiment: entry.name,
                title: entry.title,
            };
        }
        let line = format!("\n== [{}/{total}] {}: {}", i + 1, entry.name, entry.title);
        bar.suspend(|| println!("{line}"));
        match (entry.run_on)(exp_args, bar) {
            Ok(outcome) => {
                bar.suspend(|| print_outcome(&outcome));
                Ran::Done(outcome)
            }
            Err(e) => {
                let error = format!("{e:#}").replace('\n', " ");
                bar.suspend(|| eprintln!("error: {}: {error}", entry.name));
                let (status, dir) = match e {
                    RunError::Incomplete { status, dir, .. } => (status, Some(dir)),
                    _ if interrupt::requested() => (RunStatus::Interrupted, None),
                    _ => (RunStatus::Failed, None),
                };
                Ran::Failed {
                    experiment: entry.name,
                    title: entry.title,
                    status,
                    error,
                    dir,
                }
            }
        }
    };
    // Beside others, a panic is its experiment's failure, not the job's; and its thread still
    // answers, so that the scheduler never waits for it.
    let one_caught = |i: usize| -> Ran {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(i))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            let entry = &planned[i].0;
            Ran::Failed {
                experiment: entry.name,
                title: entry.title,
                status: RunStatus::Failed,
                error: format!("panicked: {what}"),
                dir: None,
            }
        })
    };
    let mut done: Vec<Option<Ran>> = (0..total).map(|_| None).collect();
    if jobs <= 1 {
        for (i, slot) in done.iter_mut().enumerate() {
            *slot = Some(one(i));
        }
    } else {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Ran)>();
        std::thread::scope(|scope| {
            let mut running = 0;
            let wait = |running: &mut usize, done: &mut [Option<Ran>]| {
                let (i, ran) = rx.recv().expect("every experiment thread sends its result");
                done[i] = Some(ran);
                *running -= 1;
            };
            for (i, (entry, _)) in planned.iter().enumerate() {
                // A timed experiment waits for the machine to be quiet, and runs on this thread.
                while running >= jobs || (entry.timed && running > 0) {
                    wait(&mut running, &mut done);
                }
                if entry.timed {
                    done[i] = Some(one(i));
                    continue;
                }
                let (tx, one_caught) = (tx.clone(), &one_caught);
                scope.spawn(move || {
                    let _ = tx.send((i, one_caught(i)));
                });
                running += 1;
            }
            while running > 0 {
                wait(&mut running, &mut done);
            }
        });
    }
    done.into_iter()
        .map(|r| r.expect("every experiment ran or was skipped"))
        .collect()
}

/// Merges every sweep in `args.merge` (each checked first, so that a missing or doubled shard
/// stops the job before anything is written), then writes the index over the merged runs.
fn merge(args: &ReproduceArgs, all: &[Entry]) -> Result<Reproduced, ReproduceError> {
    if args.run.seed.is_some() || args.run.shard.is_some() || args.run.sweep_id.is_some() {
        return Err(ShardError::Sweep {
            dir: args.merge[0].clone(),
            reason: "--seed, --shard and --sweep-id do not apply to a merge: the shards fixed them"
                .into(),
        }
        .into());
    }
    let mut planned: Vec<(Entry, Sweep)> = Vec::with_capacity(args.merge.len());
    for dir in &args.merge {
        let sweep = open_sweep(dir)?;
        let entry = find(all, &sweep.experiment).ok_or_else(|| ShardError::Sweep {
            dir: dir.clone(),
            reason: format!(
                "its shards ran '{}', which this version does not know",
                sweep.experiment
            ),
        })?;
        let same = |d: &Path| d.canonicalize().ok();
        if planned.iter().any(|(_, s)| same(&s.dir) == same(dir)) {
            return Err(ShardError::Sweep {
                dir: dir.clone(),
                reason: "given twice".into(),
            }
            .into());
        }
        planned.push((entry, sweep));
    }
    if args.run.check {
        for (entry, sweep) in &planned {
            println!(
                "{}: sweep {} checked: {} shards, {} training runs; nothing was merged or written",
                entry.name,
                sweep.dir.display(),
                sweep.shards,
                sweep.units.len()
            );
        }
        return ended(Vec::new(), 0.0, PathBuf::new(), PathBuf::new());
    }
    let started = Instant::now();
    let bar = progress_bar(0);
    let mut runs = Vec::with_capacity(planned.len());
    for (i, (entry, sweep)) in planned.iter().enumerate() {
        println!(
            "\n== [{}/{}] merging {} ({} shards): {}",
            i + 1,
            planned.len(),
            sweep.dir.display(),
            sweep.shards,
            entry.title
        );
        match (entry.merge)(sweep, &args.run, &bar) {
            Ok(outcome) => {
                print_outcome(&outcome);
                runs.push(Ran::Done(outcome));
            }
            Err(e) => {
                let error = format!("{e:#}").replace('\n', " ");
                eprintln!("error: {}: {error}", entry.name);
                runs.push(Ran::Failed {
                    experiment: entry.name,
                    title: entry.title,
                    status: RunStatus::Failed,
                    error,
                    dir: None,
                });
            }
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if runs.iter().all(|r| !matches!(r, Ran::Done(_))) {
        // Nothing was merged, so nothing is written, not even an index of the failures.
        return ended(runs, seconds, PathBuf::new(), PathBuf::new());
    }
    // The index goes beside the experiments' folders: <root>/<experiment>/<sweep-id>.
    let root = planned[0]
        .1
        .dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| args.run.out.clone());
    let command = format!(
        "cargo run --release --bin reproduce -- {}",
        args.merge
            .iter()
            .map(|d| format!("--merge {}", d.display()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    write_index(args, runs, seconds, &root, &command)
}

/// The base seeds the published results come from when `--seeds` names none.
pub const PUBLISHED_SEEDS: [u64; 3] = [0, 10, 20];

/// Runs the selection at every base seed, each into `<out>/seed-<N>` with its own index, then
/// writes the published results into `dir` (and the glance block into `--readme`). Nothing is
/// published unless every experiment completed at every seed: a reference run is whole or it is
/// not one.
fn publish(args: &ReproduceArgs, all: &[Entry], dir: &Path) -> Result<Reproduced, ReproduceError> {
    let seeds = if args.seeds.is_empty() {
        PUBLISHED_SEEDS.to_vec()
    } else {
        args.seeds.clone()
    };
    let listed = || {
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if (1..seeds.len()).any(|i| seeds[..i].contains(&seeds[i])) {
        return Err(ReproduceError::Seeds {
            seeds: listed(),
            reason: "a base seed is named twice",
        });
    }
    if let Some(readme) = &args.readme {
        // The markers are checked before an hour of runs, not after.
        let text = std::fs::read_to_string(readme).map_err(|e| BlockError::Read {
            path: readme.clone(),
            reason: e.to_string(),
        })?;
        if !text.contains(BLOCK_BEGIN) || !text.contains(BLOCK_END) {
            return Err(BlockError::NoMarkers {
                path: readme.clone(),
            }
            .into());
        }
    }
    let at_seed = |seed: u64| {
        let mut one = args.clone();
        (one.publish, one.seeds, one.readme) = (None, Vec::new(), None);
        one.run.seed = Some(seed);
        one.run.out = args.run.out.join(format!("seed-{seed}"));
        one
    };
    if args.run.check {
        // The configs are the same at every seed; check them once.
        run(&at_seed(seeds[0]), all)?;
        println!(
            "--publish {}: {} base seeds ({}) would run, then be published there; nothing was written",
            dir.display(),
            seeds.len(),
            listed()
        );
        return ended(Vec::new(), 0.0, PathBuf::new(), PathBuf::new());
    }
    let started = Instant::now();
    let mut published = Vec::with_capacity(seeds.len());
    for (i, &seed) in seeds.iter().enumerate() {
        println!("\n==== base seed {seed} ({} of {})", i + 1, seeds.len());
        let done = run(&at_seed(seed), all)?;
        let runs = done
            .runs
            .into_iter()
            .filter_map(|r| match r {
                Ran::Done(o) => Some(o),
                Ran::Failed { .. } | Ran::NotRun { .. } => None,
            })
            .collect();
        published.push(SeedRun {
            seed,
            runs,
            seconds: done.seconds,
        });
    }
    let provenance = Provenance::here();
    let stamp = utc_stamp(SystemTime::now());
    let mut command = command_line(args);
    if command == "cargo run --release --bin reproduce" {
        command += " --";
    }
    command += &format!(" --publish {}", dir.display());
    if !args.seeds.is_empty() {
        command += &format!(" --seeds {}", listed());
    }
    if let Some(readme) = &args.readme {
        command += &format!(" --readme {}", readme.display());
    }
    if let Some(jobs) = args.jobs {
        command += &format!(" --jobs {jobs}");
    }
    let publication = Publication {
        seeds: &published,
        provenance: &provenance,
        stamp: &stamp,
        command: &command,
        jobs: args.jobs(),
    };
    let written = publication.write(dir)?;
    if let Some(readme) = &args.readme {
        let results_dir = relative_dir(dir, readme);
        crate::output::published::replace_block(readme, &publication.readme_block(&results_dir))?;
        println!(
            "the claims at a glance in {} now come from this run",
            readme.display()
        );
    }
    let index = dir.join("README.md");
    println!(
        "published {} files into {} (seeds {}, {:.0} s)",
        written.len(),
        dir.display(),
        listed(),
        started.elapsed().as_secs_f64()
    );
    Ok(Reproduced {
        runs: Vec::new(),
        index_md: index.clone(),
        index_html: index,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `dir` as a link from the folder holding `file`, ending in `/`: `docs/results/` from the
/// README at the root. Falls back to the path as given.
fn relative_dir(dir: &Path, file: &Path) -> String {
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shown = match (dir.canonicalize(), base.canonicalize()) {
        (Ok(d), Ok(b)) => d.strip_prefix(&b).map(Path::to_path_buf).unwrap_or(d),
        _ => dir.to_path_buf(),
    };
    format!("{}/", shown.display())
}

/// `Ok` with the runs, or the failures among them.
fn ended(
    runs: Vec<Ran>,
    seconds: f64,
    index_md: PathBuf,
    index_html: PathBuf,
) -> Result<Reproduced, ReproduceError> {
    let failed = failures(&runs);
    if !failed.is_empty() {
        return Err(ReproduceError::Failed {
            failed,
            total: runs.len(),
        });
    }
    Ok(Reproduced {
        runs,
        index_md,
        index_html,
        seconds,
    })
}

/// Each run that did not complete, with its error.
fn failures(runs: &[Ran]) -> Vec<String> {
    runs.iter()
        .filter_map(|r| match r {
            Ran::Failed {
                experiment, error, ..
            } => Some(format!("{experiment} ({error})")),
            Ran::NotRun { experiment, .. } => Some(format!("{experiment} (not run)")),
            Ran::Done(_) => None,
        })
        .collect()
}

/// Prints the final table and writes `<root>/index.md` and `<root>/index.html` over `runs`.
fn write_index(
    args: &ReproduceArgs,
    runs: Vec<Ran>,
    seconds: f64,
    root: &Path,
    command: &str,
) -> Result<Reproduced, ReproduceError> {
    std::fs::create_dir_all(root).map_err(|e| WriteError {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut backends: Vec<&str> = runs
        .iter()
        .filter_map(|r| match r {
            Ran::Done(o) => Some(o.backend),
            Ran::Failed { .. } | Ran::NotRun { .. } => None,
        })
        .collect();
    backends.sort_unstable();
    backends.dedup();
    let backend = if backends.is_empty() {
        args.run
            .backend
            .clone()
            .unwrap_or_else(|| "the configured backends".into())
    } else {
        backends.join(", ")
    };
    let stamp = utc_stamp(SystemTime::now());
    let page = IndexPage {
        runs: &runs,
        root,
        backend: &backend,
        wall_seconds: seconds,
        stamp: &stamp,
        command,
    };
    let failed = failures(&runs);
    print_table(&runs, seconds);
    let kept = root.join("index.html");
    if failed.len() == runs.len() && kept.is_file() {
        // A page of nothing but errors would hide the last good results; the errors are on
        // the terminal, and each run folder says what happened.
        return Err(ReproduceError::AllFailed { kept, failed });
    }
    let (index_md, index_html) = page.write()?;
    println!("index: {} and {}", index_md.display(), index_html.display());
    ended(runs, seconds, index_md, index_html)
}

/// How to repeat this run.
fn command_line(args: &ReproduceArgs) -> String {
    let mut parts = vec!["cargo run --release --bin reproduce --".to_string()];
    parts.extend(args.names.iter().cloned());
    if args.configs != Path::new("configs") {
        parts.push(format!("--configs {}", args.configs.display()));
    }
    if let Some(b) = &args.run.backend {
        parts.push(format!("--backend {b}"));
    }
    if let Some(s) = args.run.seed {
        parts.push(format!("--seed {s}"));
    }
    if args.run.out != Path::new("results") {
        parts.push(format!("--out {}", args.run.out.display()));
    }
    if parts.len() == 1 {
        return "cargo run --release --bin reproduce".into();
    }
    parts.join(" ")
}

/// The final table: every claim and its verdict, and the total time.
fn print_table(runs: &[Ran], seconds: f64) {
    let mut table = Table::new(
        format!(
            "Claims and verdicts ({} experiments, {seconds:.1} s)",
            runs.len()
        ),
        &["experiment", "verdict", "claim", "time"],
    );
    for r in runs {
        match r {
            Ran::Done(o) => {
                for (i, v) in o.verdicts.iter().enumerate() {
                    table.row(vec![
                        if i == 0 {
                            o.experiment.to_string()
                        } else {
                            String::new()
                        },
                        v.word().to_string(),
                        v.claim.clone(),
                        if i == 0 {
                            format!("{:.1} s", o.seconds)
                        } else {
                            String::new()
                        },
                    ]);
                }
            }
            Ran::Failed {
                experiment,
                status,
                error,
                ..
            } => table.row(vec![
                experiment.to_string(),
                status.word().to_uppercase(),
                error.clone(),
                String::new(),
            ]),
            Ran::NotRun { experiment, .. } => table.row(vec![
                experiment.to_string(),
                "NOT RUN".into(),
                "the job was interrupted first".into(),
                String::new(),
            ]),
        }
    }
    println!("\n{}\n", table.to_text());
    println!("total wall time: {seconds:.1} s");
}
