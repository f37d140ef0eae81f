//! How a trace is shown: the JSON object `trace --json` writes and the explorer reads, and the
//! walkthrough as labelled text tables, tokens on rows and columns.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::block::gate::GateKind;
use crate::block::kernel::Kernel;
use crate::block::positional::PositionalKind;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind};

use super::{HeadTrace, TraceResult};

impl HeadTrace {
    fn to_json(&self) -> Value {
        json!({
            "q": self.q,
            "k": self.k,
            "v": self.v,
            "scores": self.scores,
            "scaled": self.scaled,
            "weights": self.weights,
            "output": self.output,
            "row_sums": self.row_sums(),
            "column_sums": self.column_sums(),
            "entropy": self.entropy(),
            "entropy_max": self.entropy_max(),
            "row_sum_off": self.row_sum_off(super::ROW_SUM_TOLERANCE),
            "unspent": self.row_sums().iter().map(|s| 1.0 - s).collect::<Vec<f32>>(),
            "gate": self.gate,
        })
    }
}

impl TraceResult {
    /// The inputs (`tokens`, `x`, `w_q`, `w_k`, `w_v`: a run can be repeated with `--input`),
    /// the options that shaped the run, `d_k`, `d_v` and `scale`, whether the fused op ran, the
    /// weights' `formula`, X after an additive positional encoding (`x_positional`), and under
    /// `heads` each head's q, k, v, scores, scaled, weights, output, row_sums (and which miss 1
    /// by more than `row_sum_tolerance`), column_sums, entropy and its ceiling `entropy_max`;
    /// `output` is the heads' outputs side by side.
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        json!({
            "tokens": self.tokens,
            "d_model": self.x.first().map_or(0, Vec::len),
            "n_heads": o.n_heads,
            "d_k": self.d_k,
            "d_v": self.d_v,
            "scale": self.scale,
            "scale_rule": o.scale.to_string(),
            "temperature": o.temperature,
            "softmax_axis": o.softmax_axis.name(),
            "causal": o.causal,
            "positional": o.positional.name(),
            "projections": o.projections,
            "qk_norm": o.qk_norm,
            "ssmax": o.ssmax,
            "softmax": o.softmax.name(),
            "gate": o.gate.name(),
            "kernel": o.kernel.name(),
            "path": path_name(o.path),
            "fused": self.fused,
            "formula": self.formula(),
            "row_sum_tolerance": super::ROW_SUM_TOLERANCE,
            "x": self.x,
            "x_positional": self.x_positional,
            "w_q": self.w_q,
            "w_k": self.w_k,
            "w_v": self.w_v,
            "heads": self.heads.iter().map(HeadTrace::to_json).collect::<Vec<_>>(),
            "output": self.output,
        })
    }

    /// The walkthrough as labelled tables, head after head.
    pub fn render(&self) -> String {
        let o = &self.options;
        let cols =
            |n: usize, p: &str| -> Vec<String> { (0..n).map(|i| format!("{p}{i}")).collect() };
        let mut out = String::new();
        let d_model = self.x.first().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "Self-attention, step by step: n = {} tokens, d_model = {d_model}, d_k = {}, d_v = {}, {}",
            self.tokens.len(),
            self.d_k,
            self.d_v,
            if o.n_heads == 1 {
                "one head".to_string()
            } else {
                format!("{} heads", o.n_heads)
            }
        );
        let _ = writeln!(
            out,
            "scale = {} ({}{}), softmax over {}, {}, positional encoding: {}{}{}\n",
            fmt_num(self.scale as f32),
            o.scale,
            if o.temperature == 1.0 {
                String::new()
            } else {
                format!(" × temperature {}", o.temperature)
            },
            match o.softmax_axis {
                SoftmaxAxis::Row => "each row (keys)",
                SoftmaxAxis::Column => "each column (queries) — a pitfall",
                SoftmaxAxis::Whole => "the whole matrix — a pitfall",
            },
            if o.causal { "causal mask" } else { "no mask" },
            o.positional,
            match (o.projections, o.qk_norm) {
                (true, false) => "",
                (false, false) => ", no projections (Q = K = V = X)",
                (true, true) => ", QK-norm (Q and K shown after it)",
                (false, true) =>
                    ", no projections (Q = K = V = X), QK-norm (Q and K shown after it)",
            },
            if o.ssmax {
                format!(
                    ", SSMax (row i of Q times s·ln n_i, s = {}, n_i the keys it sees)",
                    crate::block::ssmax::S_INIT
                )
            } else {
                String::new()
            }
        );
        if o.softmax == SoftmaxKind::OffByOne {
            let _ = writeln!(
                out,
                "off-by-one softmax: exp(s_ij) / (1 + Σ_j exp(s_ij)), so a row may leave weight unspent\n"
            );
        }
        if o.kernel == Kernel::Linear {
            let _ = writeln!(
                out,
                "linear attention: weights φ(q_i)·φ(k_j) / Σ_j φ(q_i)·φ(k_j), φ = elu + 1, no scale and no softmax; the block's output comes from running sums, and equals weights·V\n"
            );
        }
        if o.gate == GateKind::HeadOutput {
            let _ = writeln!(
                out,
                "gated heads: each head's output times σ(x_i·w_h + b_h), w_h and b_h seeded\n"
            );
        }
        let some = |rows: &[Vec<f32>]| -> Vec<Vec<Option<f32>>> {
            rows.iter()
                .map(|r| r.iter().map(|&v| Some(v)).collect())
                .collect()
        };
        table(
            &mut out,
            "1. X (token embeddings)",
            &self.tokens,
            &cols(d_model, "x"),
            &some(&self.x),
        );
        for (h, head) in self.heads.iter().enumerate() {
            let tag = if o.n_heads == 1 {
                String::new()
            } else {
                format!("head {h}: ")
            };
            let (wq, wk, wv) = if o.projections {
                ("X·W_Q", "X·W_K", "X·W_V")
            } else {
                ("X", "X", "X")
            };
            for (title, prefix, rows) in [
                (format!("2. {tag}Q = {wq}"), "q", &head.q),
                (format!("3. {tag}K = {wk}"), "k", &head.k),
                (format!("4. {tag}V = {wv}"), "v", &head.v),
            ] {
                let width = rows.first().map_or(0, Vec::len);
                table(
                    &mut out,
                    &title,
                    &self.tokens,
                    &cols(width, prefix),
                    &some(rows),
                );
            }
            let linear = o.kernel == Kernel::Linear;
            table(
                &mut out,
                &if linear {
                    format!(
                        "5. {tag}φ(Q)·φ(K)ᵀ, φ = elu + 1 (scores; rows are queries, columns keys)"
                    )
                } else {
                    format!("5. {tag}Q·Kᵀ (scores; rows are queries, columns keys)")
                },
                &self.tokens,
                &self.tokens,
                &some(&head.scores),
            );
            let step6 = if linear {
                format!(
                    "6. {tag}no scale (linear attention){}",
                    if o.causal {
                        ", future keys masked (−∞)"
                    } else {
                        ""
                    }
                )
            } else {
                format!(
                    "6. {tag}÷ {} ({}{}){}{}",
                    fmt_num(self.scale as f32),
                    o.scale,
                    if o.temperature == 1.0 { "" } else { " × τ" },
                    if o.positional == PositionalKind::Alibi {
                        ", + ALiBi's −m_h·|i − j|"
                    } else {
                        ""
                    },
                    if o.causal {
                        ", future keys masked (−∞)"
                    } else {
                        ""
                    }
                )
            };
            table(&mut out, &step6, &self.tokens, &self.tokens, &head.scaled);
            let step7 = if linear {
                format!("7. {tag}each row divided by its sum (weights)")
            } else {
                format!("7. {tag}softmax over {} (weights)", o.softmax_axis.name())
            };
            table(
                &mut out,
                &step7,
                &self.tokens,
                &self.tokens,
                &some(&head.weights),
            );
            let (which, sums) = match o.softmax_axis {
                SoftmaxAxis::Column => ("column", head.column_sums()),
                _ => ("row", head.row_sums()),
            };
            let sums: Vec<String> = sums.into_iter().map(fmt_num).collect();
            let _ = writeln!(out, "   {which} sums: {}", sums.join(", "));
            if o.softmax == SoftmaxKind::OffByOne {
                let unspent: Vec<String> = head
                    .row_sums()
                    .into_iter()
                    .map(|s| fmt_num(1.0 - s))
                    .collect();
                let _ = writeln!(out, "   weight left unspent: {}", unspent.join(", "));
            }
            if let Some(gate) = &head.gate {
                let gate: Vec<String> = gate.iter().map(|&g| fmt_num(g)).collect();
                let _ = writeln!(out, "   gate per query: {}", gate.join(", "));
            }
            let entropy: Vec<String> = head.entropy().into_iter().map(fmt_num).collect();
            let _ = writeln!(out, "   row entropy (nats): {}\n", entropy.join(", "));
            table(
                &mut out,
                &if head.gate.is_some() {
                    format!("8. {tag}gate × weights·V (output)")
                } else {
                    format!("8. {tag}weights·V (output)")
                },
                &self.tokens,
                &cols(self.d_v, "o"),
                &some(&head.output),
            );
        }
        out
    }
}

/// Longest token name shown in a table; longer names are cut with `…`.
pub const MAX_LABEL: usize = 24;

/// `name` cut to [`MAX_LABEL`] characters for display.
pub fn label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL {
        name.to_string()
    } else {
        let cut: String = name.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    }
}

fn fmt_num(v: f32) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.4}")
    }
}

fn table(
    out: &mut String,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f32>>],
) {
    let cells: Vec<Vec<String>> = values
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.map_or("−∞".to_string(), fmt_num))
                .collect()
        })
        .collect();
    let rows: Vec<String> = rows.iter().map(|r| label(r)).collect();
    let cols: Vec<String> = cols.iter().map(|c| label(c)).collect();
    let label_w = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let cell_w = cells
        .iter()
        .flatten()
        .chain(&cols)
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1)
        .max(7);
    let _ = writeln!(out, "{title}");
    let _ = write!(out, "  {:label_w$}", "");
    for c in &cols {
        let _ = write!(out, " {c:>cell_w$}");
    }
    let _ = writeln!(out);
    for (name, row) in rows.iter().zip(&cells) {
        let _ = write!(out, "  {name:<label_w$}");
        for c in row {
            let _ = write!(out, " {c:>cell_w$}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

/// `path`'s name, as the explorer's `options.path` takes it.
pub fn path_name(path: crate::block::attention::AttentionPath) -> &'static str {
    match path {
        crate::block::attention::AttentionPath::Fused => "fused",
        crate::block::attention::AttentionPath::Decomposed => "decomposed",
    }
}
