//! `trace`: the seed pages' self-attention walkthrough, step by step, on their example or yours.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use attention_lab::block::gate::GateKind;
use attention_lab::block::kernel::Kernel;
use attention_lab::block::positional::PositionalKind;
use attention_lab::block::scale::ScoreScale;
use attention_lab::block::softmax::{SoftmaxAxis, SoftmaxKind};
use attention_lab::lab::trace::{self, TraceOptions};
use attention_lab::util::cli::{finish, same_file};
use attention_lab::util::device::BackendKind;
use attention_lab::util::limits::{check_memory, human_bytes};
use clap::Parser;

/// Print every step of self-attention (X, Q, K, V, Q·Kᵀ, scaling, softmax, weights·V) as tables.
///
/// With no arguments it traces the seed page's example: "I love cats" with 3×4 embeddings.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// JSON file with your own matrices: {"tokens"?, "x", "w_q"?, "w_k"?, "w_v"?}, rows as tokens.
    #[arg(long, conflicts_with = "sentence")]
    input: Option<PathBuf>,
    /// A sentence instead: whitespace-separated words, each with a seeded embedding (the same
    /// word, the same vector).
    #[arg(long)]
    sentence: Option<String>,
    /// Width of the seeded word embeddings for --sentence.
    #[arg(long, default_value_t = 8, requires = "sentence")]
    d_model: usize,
    /// Write every intermediate (q, k, v, scores, scaled, weights, output, d_k, scale) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Hide each token's future (causal mask).
    #[arg(long)]
    causal: bool,
    /// What the scores are divided by: none, sqrt-dk, sqrt-dmodel, dk, or a number.
    #[arg(long, default_value = "sqrt-dk")]
    scale: ScoreScale,
    /// Which axis the softmax normalises: row (correct), column or whole (pitfalls).
    #[arg(long, default_value = "row")]
    softmax_axis: SoftmaxAxis,
    /// Softmax temperature: scores are divided by it too.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda (feature `cuda`), remote (feature `remote`).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Seed for W_Q, W_K, W_V when the input gives none.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Width d_k of each head's seeded W_Q, W_K, W_V (default: d_model / heads).
    #[arg(long)]
    d_k: Option<usize>,
    /// Number of heads; W_Q, W_K, W_V hold heads·d_k columns, head h in its own block.
    #[arg(long, default_value_t = 1)]
    heads: usize,
    /// Positional encoding: none, sinusoidal, learned (a seeded table) or rotary.
    #[arg(long, default_value = "none")]
    positional: PositionalKind,
    /// No W_Q, W_K, W_V: Q = K = V = X (split into heads).
    #[arg(long)]
    no_projections: bool,
    /// QK-norm: RMS-normalise each head's q and k (gains at 1) before the dot product.
    #[arg(long)]
    qk_norm: bool,
    /// Scalable-Softmax: multiply each query's scores by s·ln n, n the keys it sees (s = 0.43
    /// per head, the block's initial value); Q is shown after the factor.
    #[arg(long)]
    ssmax: bool,
    /// standard, or off-by-one: exp(s) / (1 + Σ exp(s)), so a row may leave weight unspent
    /// (Miller 2023). Row softmax only.
    #[arg(long, default_value = "standard")]
    softmax: SoftmaxKind,
    /// none, or head-output: each head's output times a seeded sigmoid gate σ(x·w_h + b_h)
    /// (Qiu et al. 2025).
    #[arg(long, default_value = "none")]
    gate: GateKind,
    /// softmax, or linear: φ(q)·φ(k) with φ = elu + 1, each row divided by its sum
    /// (Katharopoulos et al. 2020). Linear takes no scale, temperature or softmax option.
    #[arg(long, default_value = "softmax")]
    kernel: Kernel,
    /// Run even when the estimated memory exceeds what the machine has available.
    #[arg(long)]
    force: bool,
    /// Check the command and exit: parse it, read the input, estimate the memory; nothing is
    /// computed or written (the block checks the options it alone knows, such as rotary's even
    /// d_k, when it runs).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if let (Some(input), Some(json)) = (&args.input, &args.json) {
        anyhow::ensure!(
            !same_file(input, json),
            "--json {} is the --input file: writing it would overwrite the input; choose another path",
            json.display()
        );
    }
    let input = match (&args.input, &args.sentence) {
        (Some(path), _) => trace::load_input(path)?,
        (None, Some(sentence)) => {
            let words: Vec<String> = sentence.split_whitespace().map(String::from).collect();
            anyhow::ensure!(!words.is_empty(), "--sentence has no words");
            anyhow::ensure!(
                (1..=65_536).contains(&args.d_model),
                "--d-model must be from 1 to 65536, got {}",
                args.d_model
            );
            trace::embed_words(&words, args.d_model, args.seed)
        }
        (None, None) => trace::seed_page_example(),
    };
    let options = TraceOptions {
        causal: args.causal,
        scale: args.scale,
        softmax_axis: args.softmax_axis,
        temperature: args.temperature,
        seed: args.seed,
        d_k: args.d_k,
        n_heads: args.heads,
        positional: args.positional,
        projections: !args.no_projections,
        qk_norm: args.qk_norm,
        ssmax: args.ssmax,
        softmax: args.softmax,
        gate: args.gate,
        kernel: args.kernel,
        ..TraceOptions::default()
    };
    let needs = trace::footprint(&input, &options);
    check_memory(needs.bytes, &needs.what, args.force)?;
    if args.check {
        println!(
            "trace: {} token(s) of d_model {} checked, estimated peak {}; nothing was computed or written",
            input.x.rows,
            input.x.cols,
            human_bytes(needs.bytes)
        );
        return Ok(());
    }
    let device = args.backend.device()?;
    let result = trace::run(&input, &options, &device)?;
    print!("{}", result.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result.to_json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
