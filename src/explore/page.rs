//! The explorer's page: HTML from maud (every string escaped), with its script and style
//! embedded in the binary, so the page works with no network at all.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// Draws what the API computed; it does no attention arithmetic of its own.
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The seed page's eight steps, as `trace` prints them: (title, what it shows).
pub const STEPS: [(&str, &str); 8] = [
    ("1. X", "the token embeddings, one row per token"),
    ("2. Q = X·W_Q", "what each token looks for"),
    ("3. K = X·W_K", "what each token offers to be found by"),
    (
        "4. V = X·W_V",
        "what each token passes on when it is attended to",
    ),
    ("5. Q·Kᵀ", "raw scores: rows are queries, columns keys"),
    (
        "6. ÷ scale",
        "scaled scores (and −∞ where the causal mask hides a key)",
    ),
    (
        "7. softmax",
        "the weights: each row sums to 1 under the row softmax",
    ),
    (
        "8. weights·V",
        "the output: each row a weighted mix of the values",
    ),
];

/// The whole page; `backend` is named in its header.
pub fn render(backend: &str) -> Markup {
    page(backend, None)
}

/// The page as a standalone file: `snapshot` (the answers the server computed for the inputs and
/// knobs on screen, see [`crate::explore::api::snapshot`]) is embedded, and the script reads its
/// answers from there instead of a server.
pub fn render_snapshot(backend: &str, snapshot: &serde_json::Value) -> Markup {
    page(backend, Some(script_json(snapshot)))
}

/// JSON to embed in a `<script>`: `<` written as `\u003c`, so that no string in it (a token
/// "</script>") can end the script early; the value read is the same.
fn script_json(value: &serde_json::Value) -> String {
    value.to_string().replace('<', "\\u003c")
}

fn page(backend: &str, snapshot: Option<String>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "attention-lab explorer" }
                style { (PreEscaped(STYLE)) }
            }
            body data-state="loading" data-version="0" {
                header {
                    h1 { "Attention explorer" }
                    p #snapshot hidden {
                        "A snapshot: every number below is what the block computed on the "
                        (backend)
                        " backend for the inputs and knobs shown, saved with the page. Tokens, heads and steps can be clicked; to change an input or a knob, run "
                        code { "cargo run --release --bin explore" }
                        "."
                    }
                    p {
                        "Every number on this page is computed by attention-lab's Burn block on the "
                        strong #backend { (backend) }
                        " backend; the page only draws. Change any control and the block runs again."
                    }
                }
                section #controls {
                    label .wide {
                        "Sentence "
                        input #sentence type="text" value="I love cats" size="60" spellcheck="false";
                        small { " whitespace-separated words, up to 64. \"I love cats\" at d_model 4 uses the seed lesson's own embeddings; other words get seeded ones (the same word, the same vector)." }
                    }
                    label { "scale " select #scale {
                        option value="none" { "none" }
                        option value="sqrt-dk" selected { "√d_k" }
                        option value="sqrt-dmodel" { "√d_model" }
                        option value="dk" { "d_k" }
                        option value="number" { "a number…" }
                    } input #scale-number type="number" value="2" min="0.001" step="any" hidden; }
                    label { "softmax over " select #axis {
                        option value="row" selected { "rows (correct)" }
                        option value="column" { "columns (pitfall)" }
                        option value="whole" { "whole matrix (pitfall)" }
                    } }
                    label { "temperature "
                        // ln 0.05 … ln 20 in 600 steps, so that both ends lie on the grid.
                        input #temperature type="range" min="-2.995732" max="2.995732" step="0.00998577" value="0";
                        output #temperature-value { "1.00" }
                    }
                    label { input #causal type="checkbox"; " causal mask" }
                    label { "positional encoding " select #positional {
                        option value="none" selected { "none" }
                        option value="sinusoidal" { "sinusoidal" }
                        option value="learned" { "learned (seeded table)" }
                        option value="rotary" { "rotary" }
                        option value="alibi" { "ALiBi" }
                    } }
                    label { "heads " select #heads {
                        @for h in [1, 2, 4, 8] { option value=(h) { (h) } }
                    } }
                    label { "d_model " select #d-model {
                        @for d in [4, 8, 16, 32, 64] { option value=(d) { (d) } }
                    } }
                    label { input #projections type="checkbox" checked; " projections W_Q, W_K, W_V" }
                    label { input #qk-norm type="checkbox"; " QK-norm" }
                    label title="Scalable-Softmax: each query's scores times s·ln n, n the keys it sees" { input #ssmax type="checkbox"; " SSMax" }
                    label title="off-by-one: exp(s) / (1 + Σ exp(s)), so a row may leave weight unspent (Miller 2023)" { "softmax " select #softmax {
                        option value="standard" selected { "standard" }
                        option value="off-by-one" { "off-by-one (softmax1)" }
                    } }
                    label title="each head's output times σ(x·w_h + b_h), w_h and b_h seeded (Qiu et al. 2025)" { "gate " select #gate {
                        option value="none" selected { "none" }
                        option value="head-output" { "per head, on its output" }
                    } }
                    label title="linear: φ(q)·φ(k) with φ = elu + 1, each row divided by its sum, computed by running sums (Katharopoulos et al. 2020)" { "kernel " select #kernel {
                        option value="softmax" selected { "softmax" }
                        option value="linear" { "linear (elu + 1)" }
                    } }
                    label title="fused: one op that never holds the n × n weights (its own weights shown, read off the kernel); decomposed: scores, softmax and weights·V as separate steps" { "path " select #path {
                        option value="fused" selected { "fused" }
                        option value="decomposed" { "decomposed" }
                    } }
                    label { "seed " input #seed type="number" value="0" min="0" step="1"; }
                }
                p #status role="status" {}
                p #formula .formula {}
                p #paths .hint {}
                section #views {
                    div {
                        h2 { "Weights " select #head title="which head" {} }
                        p .hint { "Rows are queries, columns keys. Click a token (a row, a column or the head view) to follow it; shift-click to add queries and see their summed attention. The last column is each row's sum: all 1 only under the row softmax (red where the block says it is not)." }
                        div #legend {
                            span { "weight 0" }
                            span .bar {}
                            span { "1" }
                            span .masked-key { "masked" }
                        }
                        table #heatmap {}
                        p .exports {
                            "Save this view: "
                            button #export-svg type="button" { "SVG" }
                            " "
                            button #export-png type="button" { "PNG" }
                            " "
                            button #export-html type="button" title="a standalone page with the numbers on screen, which opens without a server" { "standalone HTML" }
                        }
                    }
                    div {
                        h2 { "Head view" }
                        p .hint { "Lines from the chosen queries to every key: thickness is the weight, one colour per head. Click a token to choose it." }
                        svg #headview xmlns="http://www.w3.org/2000/svg" {}
                    }
                }
                section #detail {
                    h2 { "Query " span #query-name {} }
                    p { "Entropy of its weights: " span #entropy {} " nats (0: one key; ln(keys it sees) = " span #entropy-max {} ": all of them alike)" }
                    div #row-detail {}
                    p #selection {}
                    h3 { "Neuron view (bertviz): how each weight is made" }
                    table #neuron {}
                }
                section #stepper {
                    h2 { "Step by step" }
                    button #step-back type="button" { "◀ Back" }
                    " "
                    span #step-count {}
                    " "
                    button #step-next type="button" { "Next ▶" }
                    ol #steps hidden { @for (title, what) in STEPS { li data-what=(what) { (title) } } }
                    h3 #step-title {}
                    p #step-what .hint {}
                    div #step-tables {}
                }
                section #shuffle-section {
                    h2 { "Shuffle: permutation equivariance, live" }
                    p .hint { "Permutes the tokens and runs the block again. Without a positional encoding and without the mask, every output row moves with its token, unchanged." }
                    button #shuffle type="button" { "Shuffle the tokens" }
                    p #shuffle-verdict { "max |Δ| = " span #max-delta { "–" } " " span #shuffle-what {} }
                    div #shuffle-compare {}
                }
                p #trained-hint .hint hidden {
                    "Trained mode is off. Train a model and look at it here: run an experiment that saves models (for example "
                    code { "cargo run --release --bin scaling" }
                    "), then start "
                    code { "explore --run results/<experiment>/<run-id>" }
                    ". Above, the words get seeded random embeddings and seeded projections: no meaning is learned, so \"it\" cannot find what it refers to and \"bank\" has one vector in every sentence."
                }
                section #trained hidden {
                    h2 { "Trained model" }
                    p .hint { "Models saved by an experiment run (explore --run). Its attention on a fresh example of its task; the answer positions are highlighted. Position 0's column is outlined: a head that parks its weight there is an attention sink. Beside each query, the weight it left unspent (off-by-one softmax) and its head's gate, where the model has them." }
                    label { "model " select #model {} }
                    label { " example seed " input #example-seed type="number" value="0" min="0" step="1"; }
                    " "
                    button #example type="button" { "New example" }
                    h3 { "Every layer and head" }
                    p .hint { "bertviz's model view: one small map per layer (rows) and head (columns). For long inputs, show only some positions." }
                    label { "positions from " input #grid-from type="number" value="0" min="0" step="1"; }
                    label { " to " input #grid-to type="number" value="" min="0" step="1"; }
                    div #model-grid {}
                    h3 { "Attention rollout" }
                    p .hint { "How much of each input token reaches each position at the top (Abnar & Zuidema 2020): each layer's heads averaged, the residual added as 0.5·W + 0.5·I, the layers multiplied. Computed by the server." }
                    div #rollout {}
                    div #trained-view {}
                }
                @if let Some(snapshot) = &snapshot {
                    script { "window.SNAPSHOT = " (PreEscaped(snapshot)) ";" }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_backend_escaped_and_embeds_the_script() {
        let page = render("<flex>").into_string();
        assert!(page.contains("&lt;flex&gt;"));
        assert!(page.contains("function render"));
        assert!(
            !page.contains("<script src"),
            "the page must need no network"
        );
        assert!(!page.contains("window.SNAPSHOT = "));
    }

    #[test]
    fn a_snapshot_cannot_end_its_script_early() {
        let page =
            render_snapshot("flex", &serde_json::json!({"tokens": ["</script><b>"]})).into_string();
        assert!(
            page.contains(r#"window.SNAPSHOT = {"tokens":["\u003c/script>\u003cb>"]};"#),
            "{page}"
        );
        assert_eq!(page.matches("</script>").count(), 2);
    }
}
