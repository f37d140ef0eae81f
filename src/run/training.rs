//! Training one configuration over several seeds, the way every training experiment does it:
//! each run goes through the notebook's units (trained here, on a shard or read back, see
//! [`crate::run::shard`]), every probe is recorded into the notebook's metrics, a diverged run is
//! reported as a finding, and variants are compared side by side in a table and curves.

use burn::prelude::*;

use crate::lab::checkpoint::ModelSpec;
use crate::lab::evaluate::{HELD_OUT, SeedRuns, describe_steps, eval_batch};
use crate::lab::metrics::{Spread, head_matrix};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::Task;
use crate::lab::train::{TrainConfig, TrainJob, TrainRun};
use crate::output::plot::{Heatmap, LineChart};
use crate::output::report::{MetricRow, Table};
use crate::run::experiment::{Notebook, RunError};

/// One trained variant of a comparison, summarised over seeds.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub runs: SeedRuns,
    /// Loss and accuracy on [`HELD_OUT`] held-out sequences at the end of training.
    pub loss: Spread,
    pub accuracy: Spread,
    /// Loss and accuracy over each seed's last training records.
    pub train_loss: Spread,
    pub train_accuracy: Spread,
    /// Steps to 90 % accuracy per seed ("412/never/388") and their mean (a never counts as the
    /// step budget).
    pub to90: String,
    pub to90_mean: f64,
}

/// Records averaged for "final" numbers.
pub const FINAL_WINDOW: usize = 5;

/// Trains each (label, model) on `task` over `seeds`, and reports them side by side: a line per
/// variant, a table (final loss, final accuracy, steps to 90 %), and loss and accuracy curves
/// written as `<part>_loss_vs_step.svg` and `<part>_accuracy_vs_step.svg`.
pub fn compare(
    notebook: &mut Notebook,
    part: &str,
    title: &str,
    variants: &[(String, ModelConfig)],
    task: &Task,
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<Vec<Variant>, RunError> {
    let mut table = Table::new(
        format!(
            "{title}: `{}`, Adam lr {}, {} steps, {} seed{}; final numbers on {HELD_OUT} held-out sequences",
            task.kind(),
            config.lr,
            config.steps,
            seeds.len(),
            if seeds.len() == 1 { "" } else { "s" }
        ),
        &[
            "variant",
            "final loss (held out)",
            "final accuracy (held out)",
            "training loss / accuracy (last records)",
            "steps to 90 % (training)",
        ],
    );
    let mut loss_chart = LineChart::new(format!("{title}: loss (mean over seeds)"), "step", "loss");
    let mut acc_chart = LineChart::new(
        format!("{title}: accuracy (mean over seeds)"),
        "step",
        "accuracy",
    );
    let mut out = Vec::with_capacity(variants.len());
    let held_out = eval_batch(task, HELD_OUT, seeds.first().copied().unwrap_or(0));
    for (label, model) in variants {
        let runs = train_seeds(notebook, part, label, model, task, config, seeds)?;
        let train_loss = runs.final_spread(FINAL_WINDOW, |r| r.loss);
        let train_accuracy = runs.final_spread(FINAL_WINDOW, |r| r.accuracy);
        let (loss, accuracy) = runs.held_out(task, &held_out, &notebook.device);
        let (to90, to90_mean) = describe_steps(&runs.steps_to_accuracy(0.9, 3), config.steps);
        notebook.say(format!(
            "{label}: held-out loss {loss}, held-out accuracy {accuracy}, steps to 90 % {to90}"
        ));
        table.row(vec![
            label.clone(),
            format!("{loss}"),
            format!("{accuracy}"),
            format!("{train_loss} / {train_accuracy}"),
            to90.clone(),
        ]);
        loss_chart = loss_chart.line(label, runs.mean_series(|r| r.loss));
        acc_chart = acc_chart.line(label, runs.mean_series(|r| r.accuracy));
        out.push(Variant {
            label: label.clone(),
            runs,
            loss,
            accuracy,
            train_loss,
            train_accuracy,
            to90,
            to90_mean,
        });
    }
    notebook.table(table);
    notebook.plot(
        &format!("{part}_loss_vs_step"),
        &format!("{title}: loss vs step"),
        loss_chart.to_svg(),
    )?;
    notebook.plot(
        &format!("{part}_accuracy_vs_step"),
        &format!("{title}: accuracy vs step"),
        acc_chart.to_svg(),
    )?;
    notebook.summarize(
        part,
        out.iter()
            .map(|v| {
                serde_json::json!({
                    "variant": v.label, "final_loss": v.loss, "final_accuracy": v.accuracy,
                    "train_loss": v.train_loss, "train_accuracy": v.train_accuracy,
                    "held_out_sequences": HELD_OUT,
                    "steps_to_90": v.to90, "steps_to_90_mean": v.to90_mean,
                    "diverged": v.runs.diverged(),
                })
            })
            .collect::<Vec<_>>(),
    );
    Ok(out)
}

/// Head 0 of the first sequence of `weights`, queries on rows.
pub fn weights_heatmap(title: impl Into<String>, weights: Tensor<4>) -> Heatmap {
    Heatmap::new(
        title,
        "query position",
        "key position",
        head_matrix(weights, 0, 0),
    )
}

/// Trains `model` on `task` once per seed, recording every probe under `part`/`label`, and
/// advancing the progress bar one unit per step; keeps every seed's model for the run folder.
pub fn train_seeds(
    notebook: &mut Notebook,
    part: &str,
    label: &str,
    model: &ModelConfig,
    task: &Task,
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<SeedRuns, RunError> {
    let runs = run_seeds(
        notebook,
        part,
        label,
        model,
        std::slice::from_ref(task),
        config,
        seeds,
    )?;
    keep_models(notebook, part, label, model, task, seeds, &runs)?;
    Ok(runs)
}

/// [`train_seeds`] without keeping the models (for sweeps too large to save every point of), on
/// one task or a mixture of them (see [`crate::lab::train::train_on`]).
pub fn run_seeds(
    notebook: &mut Notebook,
    part: &str,
    label: &str,
    model: &ModelConfig,
    tasks: &[Task],
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<SeedRuns, RunError> {
    let jobs: Vec<TrainJob> = seeds
        .iter()
        .map(|&seed| TrainJob {
            model,
            tasks,
            config,
            seed,
        })
        .collect();
    let trained = notebook.train_seeds(part, label, &jobs)?;
    let mut runs = Vec::with_capacity(seeds.len());
    for (&seed, run) in seeds.iter().zip(trained) {
        record(notebook, part, label, seed, &run);
        if let Some(d) = &run.divergence {
            notebook.finding(format!(
                "{label}, seed {seed}: {d}; the records up to it are kept"
            ));
        }
        runs.push(run);
    }
    Ok(SeedRuns { runs })
}

/// [`run_seeds`] for several configurations of one task at once, each `(label, model)` recorded
/// under its own label: on a CPU backend every (configuration, seed) run of them trains side by
/// side, one per core, as the seeds of one configuration do. One [`SeedRuns`] per configuration,
/// in order.
pub fn run_side_by_side(
    notebook: &mut Notebook,
    part: &str,
    models: &[(String, ModelConfig)],
    task: &Task,
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<Vec<SeedRuns>, RunError> {
    let tasks = std::slice::from_ref(task);
    let jobs: Vec<TrainJob> = models
        .iter()
        .flat_map(|(_, model)| {
            seeds.iter().map(move |&seed| TrainJob {
                model,
                tasks,
                config,
                seed,
            })
        })
        .collect();
    let labels: Vec<&str> = models.iter().map(|(label, _)| label.as_str()).collect();
    let mut trained = notebook
        .train_seeds(part, &labels.join(" + "), &jobs)?
        .into_iter();
    let mut out = Vec::with_capacity(models.len());
    for (label, _) in models {
        let mut runs = Vec::with_capacity(seeds.len());
        for &seed in seeds {
            let run = trained.next().expect("one run per job");
            record(notebook, part, label, seed, &run);
            if let Some(d) = &run.divergence {
                notebook.finding(format!(
                    "{label}, seed {seed}: {d}; the records up to it are kept"
                ));
            }
            runs.push(run);
        }
        out.push(SeedRuns { runs });
    }
    Ok(out)
}

/// Keeps each seed's trained model as `models/<part>-<label>-seed<seed>`.
pub fn keep_models(
    notebook: &mut Notebook,
    part: &str,
    label: &str,
    model: &ModelConfig,
    task: &Task,
    seeds: &[u64],
    runs: &SeedRuns,
) -> Result<(), RunError> {
    for (&seed, run) in seeds.iter().zip(&runs.runs) {
        notebook.keep_model(
            &format!("{part}-{label}-seed{seed}"),
            &run.model,
            &ModelSpec::new(model, task, seed),
        )?;
    }
    Ok(())
}

/// Every probe of a run as metric rows.
fn record(notebook: &mut Notebook, part: &str, label: &str, seed: u64, run: &TrainRun) {
    for r in &run.records {
        let row = |metric: &str, value: f64| {
            MetricRow::new(part, label, metric, value)
                .seed(seed)
                .step(r.step)
        };
        notebook.metric(row("loss", r.loss));
        notebook.metric(row("accuracy", r.accuracy));
        for g in &r.grads {
            notebook.metric(row(&format!("grad_norm.{}", g.name), g.norm).layer(g.layer));
        }
        for h in &r.heads {
            notebook.metric(row("entropy", h.entropy).layer(Some(h.layer)).head(h.head));
            notebook.metric(
                row("max_weight", h.max_weight)
                    .layer(Some(h.layer))
                    .head(h.head),
            );
            notebook.metric(
                row("first_key_weight", h.first_key)
                    .layer(Some(h.layer))
                    .head(h.head),
            );
            if let Some(scores) = h.induction {
                for (metric, value) in [
                    ("previous_token_score", scores.previous_token),
                    ("prefix_matching_score", scores.prefix_match),
                ] {
                    notebook.metric(row(metric, value).layer(Some(h.layer)).head(h.head));
                }
            }
        }
        for (layer, s) in r.logit_std.iter().enumerate() {
            notebook.metric(row("logit_std", *s).layer(Some(layer)));
        }
        for (layer, m) in r.max_logit.iter().enumerate() {
            notebook.metric(row("max_logit", *m).layer(Some(layer)));
        }
        let (readout, layers) = r.output_abs.split_last().unzip();
        for (layer, m) in layers.unwrap_or_default().iter().enumerate() {
            notebook.metric(row("attention_out_abs", *m).layer(Some(layer)));
        }
        if let Some(readout) = readout {
            notebook.metric(row("readout_abs", *readout));
        }
        if let Some(loss) = r.induction {
            for (metric, value) in [
                ("repeat_loss", loss.repeat),
                ("first_copy_loss", loss.first),
                ("icl_score", loss.icl_score()),
            ] {
                notebook.metric(row(metric, value));
            }
        }
    }
}
