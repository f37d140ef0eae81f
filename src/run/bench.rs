//! The speed benchmark's tables: [`crate::lab::bench`] measures rows, and these show them as
//! [`Table`]s, the same tables every report uses.

use crate::lab::bench::{BenchRow, TrainRow};
use crate::lab::timing::mib;
use crate::output::report::Table;
use crate::util::provenance::Provenance;

/// What `bench --markdown` writes: the tables with the commit, machine and command that produced
/// them, so a page can cite a recorded run instead of copying its numbers.
#[derive(Debug, Clone)]
pub struct BenchPage<'a> {
    pub provenance: &'a Provenance,
    /// UTC, `YYYYMMDD-HHMMSS`.
    pub stamp: &'a str,
    pub command: &'a str,
    pub backend: &'a str,
    /// [`crate::lab::bench::code_paths`]: the SIMD code the timed ops ran.
    pub paths: &'a str,
    /// `n eager_ms sdpa_ms` peer and training peer, as given.
    pub peers: [Option<&'a str>; 2],
    /// Each table with the lines printed under it (its worst ratios).
    pub tables: Vec<(Table, Vec<String>)>,
}

impl BenchPage<'_> {
    pub fn to_markdown(&self) -> String {
        let p = self.provenance;
        let peer = |i: usize| self.peers[i].map_or("none".to_string(), |c| format!("`{c}`"));
        let mut md = format!(
            "# `bench`: a recorded run\n\n<!-- Written by `bench --markdown`; regenerate rather \
             than edit. -->\n\n| | |\n|---|---|\n| command | `{}` |\n| finished | {} UTC |\n\
             | commit | `{}` |\n| CPU | {} ({} threads) |\n| SIMD the CPU offers | {} |\n| code paths | {} |\n\
             | toolchain | {} |\n| backend | {} |\n| PyTorch peer | {} |\n| training peer | {} |\n\n\
             Times are medians of alternated slices in one run, ms per forward+backward (or per \
             Adam step); in its turn each path runs once untimed, then {} times timed back to \
             back, as the PyTorch peer times each of its paths after a warm-up. They depend on \
             the machine entirely, and shared machines vary by 10–30 % between runs: compare \
             ratios from one run.\n",
            self.command,
            self.stamp,
            p.commit,
            p.cpu,
            p.threads,
            p.simd_line(),
            self.paths,
            p.rustc,
            self.backend,
            peer(0),
            peer(1),
            crate::lab::bench::BURST
        );
        for (table, lines) in &self.tables {
            md += &format!("\n## {}\n\n{}\n", table.title, table.to_markdown());
            if !lines.is_empty() {
                md += "\n";
                for line in lines {
                    md += &format!("- {line}\n");
                }
            }
        }
        md
    }
}

/// The block table: times, ratios, the peer's times where one ran, and peak memory.
pub fn block_table(rows: &[BenchRow]) -> Table {
    let with_peer = rows.iter().any(|r| r.peer.is_some());
    let mut header = vec![
        "n",
        "fused ms",
        "decomposed ms",
        "burn-nn ms",
        "fused / decomposed",
        "fused / burn-nn",
    ];
    if with_peer {
        header.extend([
            "torch eager ms",
            "torch SDPA ms",
            "fused / eager",
            "fused / SDPA",
        ]);
    }
    header.extend([
        "peak MiB fused",
        "decomposed",
        "burn-nn",
        "decomposed / fused",
    ]);
    let mut table = Table::new("forward+backward per n", &header);
    for r in rows {
        let mut cells = vec![
            r.n.to_string(),
            format!("{:.3}", r.fused_ms),
            format!("{:.3}", r.decomposed_ms),
            format!("{:.3}", r.burn_ms),
            format!("{:.2}", r.fused_vs_decomposed()),
            format!("{:.2}", r.fused_vs_burn()),
        ];
        if with_peer {
            match (r.peer, r.fused_vs_peer()) {
                (Some(p), Some((eager, sdpa))) => cells.extend([
                    format!("{:.3}", p.eager_ms),
                    format!("{:.3}", p.sdpa_ms),
                    format!("{eager:.2}"),
                    format!("{sdpa:.2}"),
                ]),
                _ => cells.extend(["–".to_string(), "–".into(), "–".into(), "–".into()]),
            }
        }
        cells.extend([
            mib(r.fused_bytes, 1),
            mib(r.decomposed_bytes, 1),
            mib(r.burn_bytes, 1),
            r.memory_saving().map_or("–".into(), |s| format!("{s:.1}×")),
        ]);
        table.row(cells);
    }
    table
}

/// The training table: ms per Adam step on each path and the peer's, with their ratios.
pub fn train_table(rows: &[TrainRow]) -> Table {
    let mut table = Table::new(
        "ms per Adam step of the tiny transformer",
        &[
            "shapes",
            "fused ms/step",
            "decomposed ms/step",
            "torch ms/step",
            "fused / decomposed",
            "fused / torch",
        ],
    );
    for r in rows {
        table.row(vec![
            r.label.clone(),
            format!("{:.3}", r.fused_ms),
            format!("{:.3}", r.decomposed_ms),
            r.peer_ms.map_or("–".into(), |p| format!("{p:.3}")),
            format!("{:.2}", r.fused_ms / r.decomposed_ms),
            r.peer_ms
                .map_or("–".into(), |p| format!("{:.2}", r.fused_ms / p)),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block table is the markdown the hand-built one printed: one header, one rule, a row
    /// per n, with "–" where a number was not measured.
    #[test]
    fn block_table_has_a_column_per_number() {
        let row = BenchRow {
            n: 16,
            fused_ms: 1.0,
            decomposed_ms: 2.0,
            burn_ms: 4.0,
            fused_bytes: Some(1 << 20),
            decomposed_bytes: Some(3 << 20),
            burn_bytes: None,
            peer: None,
        };
        let markdown = block_table(&[row]).to_markdown();
        assert_eq!(
            markdown,
            "| n | fused ms | decomposed ms | burn-nn ms | fused / decomposed | fused / burn-nn | \
             peak MiB fused | decomposed | burn-nn | decomposed / fused |\n\
             |---|---|---|---|---|---|---|---|---|---|\n\
             | 16 | 1.000 | 2.000 | 4.000 | 0.50 | 0.25 | 1.0 | 3.0 | – | 3.0× |"
        );
    }
}
