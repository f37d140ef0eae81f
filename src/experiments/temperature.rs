//! `temperature`: τ trades sharp attention for spread-out attention.
//!
//! w = softmax(z/τ): as τ → 0 the weights approach a one-hot on the largest logit (entropy 0,
//! max weight 1); as τ → ∞ they approach uniform (entropy ln n, max weight 1/n). τ = 1 is the
//! plain softmax (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", eq. 1).

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfig;
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{entropy_per_head, head_matrix, max_weight_per_head};
use crate::lab::model::ModelConfig;
use crate::output::plot::{Heatmap, LineChart};
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, non_empty, positive, validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::util::rng::HostRng;

/// `configs/temperature.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub logits: LogitsConfig,
    pub sentence: SentenceConfig,
}

/// Part A: fixed logits z ~ N(0, std²), one row per query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitsConfig {
    pub temperatures: Vec<f64>,
    pub n_keys: usize,
    pub rows: usize,
    pub std: f64,
}

/// Part B: one sentence through an untrained block at a few temperatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceConfig {
    pub words: Vec<String>,
    pub temperatures: Vec<f64>,
    pub d_model: usize,
    pub n_heads: usize,
}

impl Validate for TemperatureConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("logits.temperatures", &self.logits.temperatures)?;
        for &t in &self.logits.temperatures {
            positive("logits.temperatures", t)?;
        }
        at_least("logits.n_keys", self.logits.n_keys, 2)?;
        at_least("logits.rows", self.logits.rows, 1)?;
        positive("logits.std", self.logits.std)?;
        non_empty("sentence.words", &self.sentence.words)?;
        non_empty("sentence.temperatures", &self.sentence.temperatures)?;
        for &t in &self.sentence.temperatures {
            positive("sentence.temperatures", t)?;
        }
        validate_in(
            "sentence",
            &ModelConfig::new(self.sentence.d_model, self.sentence.n_heads),
        )
    }
}

experiment_config!(TemperatureConfig);

/// Entropy (nats) and max weight of softmax(z/τ) at one temperature, averaged over rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtTemperature {
    pub tau: f64,
    pub entropy: f64,
    pub max_weight: f64,
}

/// softmax(z/τ) of fixed `logits: [rows, n]` for each τ.
pub fn sweep(logits: &Tensor<2>, temperatures: &[f64]) -> Vec<AtTemperature> {
    let [rows, n] = logits.dims();
    temperatures
        .iter()
        .map(|&tau| {
            let weights = softmax(logits.clone().div_scalar(tau), 1).reshape([1, 1, rows, n]); // [1, 1, rows, n]
            AtTemperature {
                tau,
                entropy: entropy_per_head(weights.clone())[0],
                max_weight: max_weight_per_head(weights)[0],
            }
        })
        .collect()
}

/// The experiment.
pub struct Temperature;

impl Experiment for Temperature {
    const NAME: &'static str = "temperature";
    const TITLE: &'static str = "low temperature sharpens attention toward one-hot, high temperature flattens it toward uniform";
    const CLAIM: &'static str = "The seed lesson claims that dividing the logits by a temperature τ \
        controls how peaked attention is: τ < 1 sharpens it, τ > 1 spreads it out. Part A \
        measures the entropy and the largest weight of softmax(z/τ) on fixed logits over τ, \
        against the one-hot and uniform limits. Part B shows one sentence's attention through an \
        untrained block at a few temperatures.";
    type Config = TemperatureConfig;

    fn footprint(config: &TemperatureConfig) -> Footprint {
        let l = &config.logits;
        let s = &config.sentence;
        let logits = l.rows as f64 * l.n_keys as f64 * l.temperatures.len() as f64;
        footprint::floats("Part A's logits", logits).max(footprint::block(
            "Part B",
            s.d_model,
            s.n_heads,
            1,
            s.words.len(),
        ))
    }

    fn work(config: &TemperatureConfig) -> u64 {
        (config.logits.temperatures.len() + config.sentence.temperatures.len()) as u64
    }

    fn run(config: &TemperatureConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let measured = Measured {
            logits: measure_logits(config, notebook),
            sentence: measure_sentence(config, notebook)?,
        };
        show(config, &measured, notebook)?;
        judge(config, &measured, notebook);
        summarise(&measured, notebook);
        Ok(())
    }
}

/// What the run measured: Part A's points, by rising τ, and Part B's sentence at each τ.
struct Measured {
    logits: Vec<AtTemperature>,
    sentence: Vec<SentenceAt>,
}

/// Head 0 of the untrained block on Part B's sentence at one τ.
struct SentenceAt {
    tau: f64,
    entropy: f64,
    max_weight: f64,
    /// The weights, queries on rows.
    weights: Vec<Vec<f64>>,
}

/// Part A: softmax(z/τ) on fixed logits, each τ's entropy and largest weight.
fn measure_logits(config: &TemperatureConfig, notebook: &mut Notebook) -> Vec<AtTemperature> {
    let c = &config.logits;
    let logits =
        HostRng::new(config.run.seed).normal_tensor([c.rows, c.n_keys], c.std, &notebook.device);
    let mut temperatures = c.temperatures.clone();
    temperatures.sort_by(f64::total_cmp);
    let points = sweep(&logits, &temperatures);
    notebook.advance(temperatures.len() as u64);
    for p in &points {
        let label = format!("tau={}", p.tau);
        notebook
            .metric(MetricRow::new("logits", &label, "entropy", p.entropy).seed(config.run.seed));
        notebook.metric(
            MetricRow::new("logits", &label, "max_weight", p.max_weight).seed(config.run.seed),
        );
    }
    points
}

/// Part B: one sentence through an untrained block at each τ.
fn measure_sentence(
    config: &TemperatureConfig,
    notebook: &mut Notebook,
) -> Result<Vec<SentenceAt>, RunError> {
    let s = &config.sentence;
    let n = s.words.len();
    // One N(0, 1) embedding per distinct word, so a repeated word is the same vector.
    let mut rng = HostRng::new(config.run.seed ^ 0x5E47_E4CE);
    let mut vocabulary: Vec<(&str, Vec<f32>)> = Vec::new();
    let mut x: Vec<f32> = Vec::with_capacity(n * s.d_model);
    for word in &s.words {
        if !vocabulary.iter().any(|(w, _)| w == word) {
            vocabulary.push((word, rng.normal_vec(s.d_model, 1.0)));
        }
        let (_, e) = vocabulary
            .iter()
            .find(|(w, _)| w == word)
            .expect("just added");
        x.extend(e);
    }
    let x = Tensor::<3>::from_data(TensorData::new(x, [1, n, s.d_model]), &notebook.device); // [1, n, d_model]
    let mut at = Vec::with_capacity(s.temperatures.len());
    for &tau in &s.temperatures {
        let block = AttentionConfig::new(s.d_model, s.n_heads)
            .with_temperature(tau)
            .with_seed(config.run.seed)
            .init(&notebook.device)?;
        let weights = block.forward(x.clone()).weights(); // [1, heads, n, n]
        let entropy = entropy_per_head(weights.clone())[0];
        let max_weight = max_weight_per_head(weights.clone())[0];
        let label = format!("tau={tau}");
        notebook
            .metric(MetricRow::new("sentence", &label, "entropy", entropy).seed(config.run.seed));
        notebook.metric(
            MetricRow::new("sentence", &label, "max_weight", max_weight).seed(config.run.seed),
        );
        at.push(SentenceAt {
            tau,
            entropy,
            max_weight,
            weights: head_matrix(weights, 0, 0),
        });
        notebook.advance(1);
    }
    Ok(at)
}

/// Part A's table and its entropy and largest weight against τ; Part B's table and a heatmap
/// per τ.
fn show(
    config: &TemperatureConfig,
    measured: &Measured,
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let (c, points) = (&config.logits, &measured.logits);
    let uniform = (c.n_keys as f64).ln();
    let mut table = Table::new(
        format!(
            "Part A: softmax(z/τ) on fixed logits z ~ N(0, {}²), {} rows of {} keys (uniform: entropy ln {} = {uniform:.3}, max weight {:.4})",
            c.std,
            c.rows,
            c.n_keys,
            c.n_keys,
            1.0 / c.n_keys as f64
        ),
        &["τ", "entropy (nats)", "entropy / ln n", "max weight"],
    );
    for p in points {
        table.row(vec![
            format!("{}", p.tau),
            format!("{:.3}", p.entropy),
            format!("{:.3}", p.entropy / uniform),
            format!("{:.3}", p.max_weight),
        ]);
    }
    notebook.table(table);
    let taus: Vec<f64> = points.iter().map(|p| p.tau).collect();
    let flat = |y: f64| taus.iter().map(|&t| (t, y)).collect::<Vec<_>>();
    notebook.plot(
        "entropy_vs_tau",
        "Entropy vs temperature",
        LineChart::new(
            "Attention entropy vs temperature",
            "τ",
            "mean row entropy (nats)",
        )
        .log_x()
        .line(
            "softmax(z/τ)",
            points.iter().map(|p| (p.tau, p.entropy)).collect(),
        )
        .reference(format!("uniform, ln {}", c.n_keys), flat(uniform))
        .reference("one-hot, 0", flat(0.0))
        .to_svg(),
    )?;
    notebook.plot(
        "max_weight_vs_tau",
        "Largest weight vs temperature",
        LineChart::new(
            "Largest attention weight vs temperature",
            "τ",
            "mean max weight",
        )
        .log_x()
        .line(
            "softmax(z/τ)",
            points.iter().map(|p| (p.tau, p.max_weight)).collect(),
        )
        .reference(
            format!("uniform, 1/{}", c.n_keys),
            flat(1.0 / c.n_keys as f64),
        )
        .reference("one-hot, 1", flat(1.0))
        .to_svg(),
    )?;

    let s = &config.sentence;
    let sentence = s.words.join(" ");
    let mut table = Table::new(
        format!("Part B: \"{sentence}\" through an untrained block (head 0)"),
        &["τ", "entropy (nats)", "max weight"],
    );
    for at in &measured.sentence {
        let tau = at.tau;
        table.row(vec![
            format!("{tau}"),
            format!("{:.3}", at.entropy),
            format!("{:.3}", at.max_weight),
        ]);
        notebook.plot(
            &format!("sentence_tau_{}", format!("{tau}").replace('.', "_")),
            &format!("\"{sentence}\" at τ = {tau}"),
            Heatmap::new(format!("τ = {tau}"), "query", "key", at.weights.clone())
                .names(s.words.clone(), s.words.clone())
                .to_svg(),
        )?;
    }
    notebook.table(table);
    Ok(())
}

/// Part A's claims: monotone in τ at every step, and the limits at both ends. Part B only shows.
fn judge(config: &TemperatureConfig, measured: &Measured, notebook: &mut Notebook) {
    let (c, points) = (&config.logits, &measured.logits);
    let uniform = (c.n_keys as f64).ln();
    let rising = points.windows(2).all(|w| w[1].entropy > w[0].entropy);
    let falling = points.windows(2).all(|w| w[1].max_weight < w[0].max_weight);
    let (cold, hot) = (points[0], points[points.len() - 1]);
    notebook.verdict(Verdict::new(
        "raising τ raises the entropy and lowers the largest weight, at every step",
        rising && falling && points.len() > 1,
        format!(
            "entropy {:.3} → {:.3} nats and max weight {:.3} → {:.3} from τ = {} to τ = {}; monotone: entropy {rising}, max weight {falling}",
            cold.entropy, hot.entropy, cold.max_weight, hot.max_weight, cold.tau, hot.tau
        ),
    ));
    notebook.verdict(Verdict::new(
        "the extremes approach their limits: one-hot as τ → 0, uniform as τ grows",
        cold.max_weight > 0.9 && hot.entropy > 0.95 * uniform,
        format!(
            "at τ = {}: max weight {:.3} (near one-hot = above 0.9); at τ = {}: entropy {:.3} = {:.1} % of ln {} (near uniform = above 95 %)",
            cold.tau,
            cold.max_weight,
            hot.tau,
            hot.entropy,
            100.0 * hot.entropy / uniform,
            c.n_keys
        ),
    ));
}

/// Part A's points, for `summary.json`.
fn summarise(measured: &Measured, notebook: &mut Notebook) {
    notebook.summarize("logits", &measured.logits);
}
