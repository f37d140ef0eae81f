//! The published results: what `reproduce --publish` writes into `docs/results/` from runs at
//! several base seeds, so that the docs carry only numbers the code produced, with the commit and
//! machine that produced them.
//!
//! - `<experiment>.md`: each claim's verdict at every base seed and their tally ("CONFIRMED 3 of
//!   3"), every verdict's evidence, the first seed's full report, and its plots beside it in
//!   `<experiment>/`;
//! - `README.md`: the commit, date, CPU, SIMD paths, toolchain, backend and wall times, and the
//!   claims at a glance;
//! - the same glance table, on request, between two markers in another file (the README).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::output::report::{RunOutcome, Verdict, WriteError, write_atomic};
use crate::util::provenance::Provenance;

/// The line that opens the generated block in a file that also holds prose.
pub const BLOCK_BEGIN: &str = "<!-- claims at a glance: begin (written by `reproduce --publish`; edit nothing up to the end marker) -->";
/// The line that closes it.
pub const BLOCK_END: &str = "<!-- claims at a glance: end -->";

/// Every experiment's run at one base seed.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub seed: u64,
    pub runs: Vec<RunOutcome>,
    pub seconds: f64,
}

/// Runs at several base seeds, and where they came from.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    /// In the order they ran; the first is the one whose full reports and plots are published.
    pub seeds: &'a [SeedRun],
    pub provenance: &'a Provenance,
    /// UTC, `YYYYMMDD-HHMMSS`.
    pub stamp: &'a str,
    /// How to repeat it.
    pub command: &'a str,
    /// Experiments that ran side by side (`reproduce --jobs`).
    pub jobs: usize,
}

/// A markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How the verdicts on one claim came out across seeds: `CONFIRMED 3 of 3`, or each kind with its
/// count when they differ.
pub fn tally(verdicts: &[Option<&Verdict>]) -> String {
    let total = verdicts.len();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in verdicts {
        let word = v.map_or("MISSING", |v| v.word());
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    counts
        .iter()
        .map(|(word, n)| format!("{word} {n} of {total}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict on `verdict`'s claim in each run: the one with the same wording, or else the one
/// at the same place (`i`), since a claim may state a number its config sets.
fn same_claim<'a>(
    runs: &[Option<&'a RunOutcome>],
    i: usize,
    verdict: &Verdict,
) -> Vec<Option<&'a Verdict>> {
    runs.iter()
        .map(|r| {
            r.and_then(|o| {
                o.verdicts
                    .iter()
                    .find(|v| v.claim == verdict.claim)
                    .or_else(|| o.verdicts.get(i))
            })
        })
        .collect()
}

/// The key number of a verdict: its evidence up to the first `;` outside parentheses, where the
/// verdicts put the measurement the decision rests on.
pub fn key_number(evidence: &str) -> &str {
    let mut depth = 0i32;
    for (at, c) in evidence.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' if depth == 0 => return evidence[..at].trim(),
            _ => {}
        }
    }
    evidence.trim()
}

impl Publication<'_> {
    fn seeds_line(&self) -> String {
        self.seeds
            .iter()
            .map(|s| s.seed.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn backends(&self) -> String {
        let mut names: Vec<&str> = self
            .seeds
            .iter()
            .flat_map(|s| s.runs.iter().map(|o| o.backend))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    /// The experiments in the first seed's order.
    fn experiments(&self) -> impl Iterator<Item = &RunOutcome> {
        self.seeds.first().into_iter().flat_map(|s| s.runs.iter())
    }

    /// Experiment `name`'s run at every seed (`None` where that seed did not run it).
    fn runs_of(&self, name: &str) -> Vec<Option<&RunOutcome>> {
        self.seeds
            .iter()
            .map(|s| s.runs.iter().find(|o| o.experiment == name))
            .collect()
    }

    /// The claims at a glance, one row per claim, linking each experiment to
    /// `<link_dir><experiment>.md`.
    pub fn glance_table(&self, link_dir: &str) -> String {
        let mut md = format!(
            "| experiment | claim | verdict over base seeds {} | key number (base seed {}) |\n|---|---|---|---|\n",
            self.seeds_line(),
            self.seeds.first().map_or(0, |s| s.seed)
        );
        for first in self.experiments() {
            let runs = self.runs_of(first.experiment);
            for (i, v) in first.verdicts.iter().enumerate() {
                let at_seeds = same_claim(&runs, i, v);
                let name = if i == 0 {
                    format!("[`{0}`]({link_dir}{0}.md)", first.experiment)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} |",
                    cell(&v.claim),
                    tally(&at_seeds),
                    cell(key_number(&v.evidence))
                );
            }
        }
        md
    }

    /// The few lines that say which run the numbers come from.
    fn provenance_lines(&self) -> String {
        let p = self.provenance;
        let walls = self
            .seeds
            .iter()
            .map(|s| format!("{:.0} s at base seed {}", s.seconds, s.seed))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "| | |\n|---|---|\n| commit | `{}` |\n| finished | {} UTC |\n| CPU | {} ({} threads) |\n\
             | SIMD the CPU offers | {} |\n| toolchain | {} |\n| backend | {} |\n| base seeds | {} |\n\
             | wall time of each `reproduce` | {walls} |\n| command | `{}` |\n",
            p.commit,
            self.stamp,
            cell(&p.cpu),
            p.threads,
            p.simd_line(),
            cell(&p.rustc),
            self.backends(),
            self.seeds_line(),
            cell(self.command),
        )
    }

    /// The block the README holds between [`BLOCK_BEGIN`] and [`BLOCK_END`]: the glance table
    /// with its links under `results_dir` (as seen from the README), and one line of provenance.
    pub fn readme_block(&self, results_dir: &str) -> String {
        let p = self.provenance;
        let walls = self
            .seeds
            .iter()
            .map(|s| format!("{:.0} s", s.seconds))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{BLOCK_BEGIN}\n{}\nFrom the reference run in [`{results_dir}`]({results_dir}README.md): commit `{}`, \
             finished {} UTC on {} ({} threads) with {}; one `reproduce` took {walls} at base seeds {}.\n{BLOCK_END}",
            self.glance_table(results_dir),
            short(&p.commit),
            self.stamp,
            p.cpu,
            p.threads,
            self.backends(),
            self.seeds_line()
        )
    }

    /// `README.md` of the results folder.
    fn index(&self) -> String {
        let mut md = String::from(
            "# Results: the reference run\n\n\
             <!-- Written by `reproduce --publish`; regenerate rather than edit. -->\n\n\
             Every number the lab's docs quote comes from the files in this folder. Each was \
             written by the command below, on the machine it names.\n\n",
        );
        md += &self.provenance_lines();
        md += "\n## Which numbers depend on the machine\n\n\
               A run is bit-identical on one machine. Across machines the last bits differ: \
               `gemm` and the fused kernel's exponentials pick AVX2 or AVX-512 code by what the \
               CPU offers, and a training trajectory carries such differences forward. Verdicts \
               should not change; a number quoted to three digits may. Timings (`complexity`, \
               the wall times) depend on the machine entirely.\n\n\
               ## Claims at a glance\n\n";
        md += &self.glance_table("");
        md += "\n## Wall time per experiment (s)\n\n";
        if self.jobs > 1 {
            let _ = write!(
                md,
                "Up to {} experiments ran side by side (`--jobs`), those that judge time or memory \
                 alone, so these times overlap: each includes the time its experiment shared the \
                 cores. The wall time of each `reproduce` above is the job's.\n\n",
                self.jobs
            );
        }
        md += "| experiment |";
        for s in self.seeds {
            let _ = write!(md, " base seed {} |", s.seed);
        }
        md += "\n|---|";
        md += &"---|".repeat(self.seeds.len());
        md += "\n";
        for first in self.experiments() {
            let _ = write!(md, "| [`{0}`]({0}.md) |", first.experiment);
            for run in self.runs_of(first.experiment) {
                let _ = write!(
                    md,
                    " {} |",
                    run.map_or("—".into(), |o| format!("{:.1}", o.seconds))
                );
            }
            md += "\n";
        }
        md
    }

    /// `<experiment>.md`: the tally, the evidence at every seed, the first seed's report.
    fn experiment_page(&self, first: &RunOutcome, report: &str) -> String {
        let name = first.experiment;
        let runs = self.runs_of(name);
        let mut md = format!(
            "# `{name}`: results\n\n\
             <!-- Written by `reproduce --publish`; regenerate rather than edit. -->\n\n\
             {}\n\nBase seeds {} on {}, commit `{}`, finished {} UTC; the machine is in \
             [README.md](README.md).\n\n## Verdicts\n\n| claim | over the seeds |",
            first.title,
            self.seeds_line(),
            self.backends(),
            short(&self.provenance.commit),
            self.stamp,
        );
        for s in self.seeds {
            let _ = write!(md, " base seed {} |", s.seed);
        }
        md += "\n|---|---|";
        md += &"---|".repeat(self.seeds.len());
        md += "\n";
        for (i, v) in first.verdicts.iter().enumerate() {
            let at_seeds = same_claim(&runs, i, v);
            let _ = write!(md, "| {} | {} |", cell(&v.claim), tally(&at_seeds));
            for v in &at_seeds {
                let _ = write!(md, " {} |", v.map_or("—", |v| v.word()));
            }
            md += "\n";
        }
        md += "\n## Evidence at each base seed\n";
        for (s, run) in self.seeds.iter().zip(&runs) {
            let _ = write!(md, "\n### Base seed {}", s.seed);
            match run {
                Some(o) => {
                    let _ = writeln!(md, " ({:.1} s)\n", o.seconds);
                    for v in &o.verdicts {
                        let _ = writeln!(md, "- **{}**: {}. {}", v.word(), v.claim, v.evidence);
                    }
                    for f in &o.findings {
                        let _ = writeln!(md, "- finding: {f}");
                    }
                }
                None => md += "\n\nNot run at this seed.\n",
            }
        }
        let _ = write!(
            md,
            "\n## The full report at base seed {}\n\n{}",
            self.seeds.first().map_or(0, |s| s.seed),
            embedded_report(report, name)
        );
        md
    }

    /// Writes every page and the first seed's plots into `dir`; returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
        let fail = |path: &Path, e: std::io::Error| WriteError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        let mut written = Vec::new();
        for first in self.experiments() {
            let report_path = first.dir.join("report.md");
            let report =
                std::fs::read_to_string(&report_path).map_err(|e| fail(&report_path, e))?;
            let plots = dir.join(first.experiment);
            // Last run's plots go first: a plot this run did not draw must not linger.
            if plots.is_dir() {
                for entry in std::fs::read_dir(&plots)
                    .map_err(|e| fail(&plots, e))?
                    .flatten()
                {
                    if entry.path().extension().is_some_and(|e| e == "svg") {
                        std::fs::remove_file(entry.path()).map_err(|e| fail(&entry.path(), e))?;
                    }
                }
            }
            std::fs::create_dir_all(&plots).map_err(|e| fail(&plots, e))?;
            for (stem, _) in &first.plots {
                let from = first.dir.join(format!("{stem}.svg"));
                let to = plots.join(format!("{stem}.svg"));
                let svg = std::fs::read(&from).map_err(|e| fail(&from, e))?;
                written.push(write_atomic(&to, &svg)?);
            }
            let page = dir.join(format!("{}.md", first.experiment));
            written.push(write_atomic(
                &page,
                self.experiment_page(first, &report).as_bytes(),
            )?);
        }
        let index = dir.join("README.md");
        written.push(write_atomic(&index, self.index().as_bytes())?);
        Ok(written)
    }
}

/// The first 12 characters of a commit, and what follows it (`+ uncommitted changes`).
fn short(commit: &str) -> String {
    match commit.split_once(' ') {
        Some((hash, rest)) if hash.len() > 12 => format!("{} {rest}", &hash[..12]),
        None if commit.len() > 12 && commit.chars().all(|c| c.is_ascii_hexdigit()) => {
            commit[..12].to_string()
        }
        _ => commit.to_string(),
    }
}

/// A run's `report.md` as a section of another page: its claim, tables and plots, without its
/// title, its verdicts and findings (the page lists them for every seed) or its run lines (which
/// name a folder the page does not carry); every heading one level down, and its plots (`x.svg`
/// beside it in the run folder) under `<experiment>/`.
fn embedded_report(report: &str, experiment: &str) -> String {
    const LEFT_OUT: [&str; 3] = ["## Verdicts", "## Findings", "## Run"];
    let mut out = String::new();
    let mut skipping = false;
    for line in report
        .lines()
        .skip_while(|l| l.starts_with("# ") || l.is_empty())
    {
        if line.starts_with("## ") {
            skipping = LEFT_OUT.contains(&line.trim_end());
        }
        if skipping {
            continue;
        }
        if line.starts_with('#') {
            out.push('#');
            out.push_str(line);
        } else if let Some(rest) = line.strip_prefix("![")
            && let Some((alt, file)) = rest.split_once("](")
        {
            let _ = write!(out, "![{alt}]({experiment}/{file}");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

/// Why the generated block could not replace the old one.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "{path} has no generated block to replace: put a line `{BLOCK_BEGIN}` and, below it, a line `{BLOCK_END}` where the table belongs"
    )]
    NoMarkers { path: PathBuf },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Replaces everything from the [`BLOCK_BEGIN`] line to the [`BLOCK_END`] line of `path` (both
/// included) with `block`, leaving the rest of the file as it was.
pub fn replace_block(path: &Path, block: &str) -> Result<(), BlockError> {
    let text = std::fs::read_to_string(path).map_err(|e| BlockError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let no_markers = || BlockError::NoMarkers {
        path: path.to_path_buf(),
    };
    let begin = text.find(BLOCK_BEGIN).ok_or_else(no_markers)?;
    let end = text[begin..].find(BLOCK_END).ok_or_else(no_markers)? + begin + BLOCK_END.len();
    let replaced = format!("{}{block}{}", &text[..begin], &text[end..]);
    write_atomic(path, replaced.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_each_verdict_over_the_seeds() {
        let yes = Verdict::new("c", true, "x = 1.0; y = 2.0");
        let no = Verdict::new("c", false, "x = 0.1");
        assert_eq!(
            tally(&[Some(&yes), Some(&yes), Some(&yes)]),
            "CONFIRMED 3 of 3"
        );
        assert_eq!(
            tally(&[Some(&yes), Some(&no), None]),
            "CONFIRMED 1 of 3, NOT CONFIRMED 1 of 3, MISSING 1 of 3"
        );
        assert_eq!(key_number(&yes.evidence), "x = 1.0");
        assert_eq!(key_number("one clause"), "one clause");
        // A `;` inside parentheses belongs to the clause.
        assert_eq!(
            key_number("no mask 0.123 (chance 0.125; fails = below 0.5); seeds 3"),
            "no mask 0.123 (chance 0.125; fails = below 0.5)"
        );
    }

    #[test]
    fn an_embedded_report_keeps_its_tables_and_finds_its_plots() {
        let report = "# `demo`: a title\n\nThe claim.\n\n## Verdicts\n\n- ok\n\n## Part A\n\n| a |\n\n### Loss\n\n![Loss](loss.svg)\n\n## Run\n\n- repeat: here\n";
        let embedded = embedded_report(report, "demo");
        assert!(embedded.starts_with("The claim."), "{embedded}");
        assert!(
            !embedded.contains("- ok") && !embedded.contains("repeat"),
            "{embedded}"
        );
        assert!(embedded.contains("### Part A\n\n| a |"), "{embedded}");
        assert!(embedded.contains("#### Loss"), "{embedded}");
        assert!(embedded.contains("![Loss](demo/loss.svg)"), "{embedded}");
    }

    #[test]
    fn the_block_is_replaced_and_nothing_else() {
        let path =
            std::env::temp_dir().join(format!("attention-lab-block-{}.md", std::process::id()));
        let before = format!("intro\n{BLOCK_BEGIN}\nold table\n{BLOCK_END}\noutro\n");
        std::fs::write(&path, &before).unwrap();
        replace_block(&path, &format!("{BLOCK_BEGIN}\nnew table\n{BLOCK_END}")).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            format!("intro\n{BLOCK_BEGIN}\nnew table\n{BLOCK_END}\noutro\n")
        );
        std::fs::write(&path, "no markers\n").unwrap();
        let err = replace_block(&path, "x").unwrap_err();
        assert!(err.to_string().contains("no generated block"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "no markers\n");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            short("0123456789abcdef0123 + uncommitted changes"),
            "0123456789ab + uncommitted changes"
        );
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
    }
}
