//! The index `reproduce` writes over every run: `results/index.md` and one self-contained
//! `results/index.html` (plots inlined), each listing every claim, its verdicts with their
//! numbers, its findings, its plots and links into its run folder.

use std::path::{Path, PathBuf};

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::output::report::{Outcome, RunOutcome, RunStatus, WriteError, write_atomic};

/// One experiment as `reproduce` saw it.
#[derive(Debug, Clone)]
pub enum Ran {
    Done(RunOutcome),
    /// It stopped with an error (`status` failed) or was interrupted; whatever it wrote stays in
    /// `dir` when there is one.
    Failed {
        experiment: &'static str,
        title: &'static str,
        status: RunStatus,
        error: String,
        dir: Option<PathBuf>,
    },
    /// It never started: the job was interrupted before its turn.
    NotRun {
        experiment: &'static str,
        title: &'static str,
    },
}

impl Ran {
    pub fn experiment(&self) -> &'static str {
        match self {
            Ran::Done(o) => o.experiment,
            Ran::Failed { experiment, .. } | Ran::NotRun { experiment, .. } => experiment,
        }
    }

    /// The word the index shows for a run that did not complete.
    fn word(status: RunStatus) -> &'static str {
        match status {
            RunStatus::Interrupted => "INTERRUPTED",
            _ => "FAILED",
        }
    }
}

/// The CSS class of a verdict.
fn class(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Confirmed => "ok",
        Outcome::NotConfirmed => "no",
        Outcome::Inconclusive => "maybe",
    }
}

/// How many verdicts of each kind, and how many experiments did not complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    confirmed: usize,
    not: usize,
    inconclusive: usize,
    incomplete: usize,
}

impl Counts {
    fn sentence(&self) -> String {
        format!(
            "{} verdicts confirmed, {} not confirmed, {} inconclusive, {} experiments did not complete",
            self.confirmed, self.not, self.inconclusive, self.incomplete
        )
    }
}

/// What the index says about the whole run.
#[derive(Debug, Clone)]
pub struct IndexPage<'a> {
    pub runs: &'a [Ran],
    /// Where the index goes; run folders are linked relative to it.
    pub root: &'a Path,
    pub backend: &'a str,
    pub wall_seconds: f64,
    pub stamp: &'a str,
    pub command: &'a str,
}

/// Files every run folder has, linked from the index.
pub const RUN_FILES: [&str; 4] = ["report.md", "summary.json", "metrics.csv", "config.toml"];

impl IndexPage<'_> {
    /// `dir` relative to the index, with `/` separators.
    fn link(&self, dir: &Path, file: &str) -> String {
        let rel = dir.strip_prefix(self.root).unwrap_or(dir).join(file);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for r in self.runs {
            match r {
                Ran::Done(o) => {
                    for v in &o.verdicts {
                        match v.outcome {
                            Outcome::Confirmed => counts.confirmed += 1,
                            Outcome::NotConfirmed => counts.not += 1,
                            Outcome::Inconclusive => counts.inconclusive += 1,
                        }
                    }
                }
                Ran::Failed { .. } | Ran::NotRun { .. } => counts.incomplete += 1,
            }
        }
        counts
    }

    /// `[report.md](…)` of an incomplete run's folder, or nothing.
    fn partial_link_md(&self, dir: &Option<PathBuf>) -> String {
        dir.as_ref()
            .map(|d| {
                format!(
                    " (partial results: [report.md]({}))",
                    self.link(d, "report.md")
                )
            })
            .unwrap_or_default()
    }

    fn partial_link_html(&self, dir: &Option<PathBuf>) -> Markup {
        html! {
            @if let Some(d) = dir {
                " (partial results: " a href=(self.link(d, "report.md")) { "report.md" } ")"
            }
        }
    }

    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# attention-lab: every claim, measured\n\n{} experiments on `{}`, {:.1} s in all (finished {} UTC); {}.\n\nRepeat: `{}`\n\n## Claims and verdicts\n\n| experiment | verdict | claim |\n|---|---|---|\n",
            self.runs.len(),
            self.backend,
            self.wall_seconds,
            self.stamp,
            self.counts().sentence(),
            self.command
        );
        for r in self.runs {
            match r {
                Ran::Done(o) => {
                    let report = self.link(&o.dir, "report.md");
                    for v in &o.verdicts {
                        md += &format!(
                            "| [`{}`]({report}) | {} | {} |\n",
                            o.experiment,
                            v.word(),
                            v.claim
                        );
                    }
                }
                Ran::Failed {
                    experiment,
                    status,
                    error,
                    dir,
                    ..
                } => {
                    md += &format!(
                        "| `{experiment}` | {} | {error}{} |\n",
                        Ran::word(*status),
                        self.partial_link_md(dir)
                    )
                }
                Ran::NotRun { experiment, .. } => {
                    md += &format!("| `{experiment}` | NOT RUN | the job was interrupted first |\n")
                }
            }
        }
        for r in self.runs {
            match r {
                Ran::Done(o) => {
                    md += &format!("\n## `{}`: {}\n\n{}\n\n", o.experiment, o.title, o.claim);
                    for v in &o.verdicts {
                        md += &format!("- **{}**: {}. {}\n", v.word(), v.claim, v.evidence);
                    }
                    for f in &o.findings {
                        md += &format!("- finding: {f}\n");
                    }
                    md += &format!(
                        "\nRun folder: {} ({:.1} s on `{}`)\n",
                        RUN_FILES
                            .iter()
                            .map(|f| format!("[{f}]({})", self.link(&o.dir, f)))
                            .collect::<Vec<_>>()
                            .join(" · "),
                        o.seconds,
                        o.backend
                    );
                    for (file, title) in &o.plots {
                        md += &format!(
                            "\n![{title}]({})\n",
                            self.link(&o.dir, &format!("{file}.svg"))
                        );
                    }
                }
                Ran::Failed {
                    experiment,
                    title,
                    status,
                    error,
                    dir,
                } => {
                    md += &format!(
                        "\n## `{experiment}`: {title}\n\n**{}**: {error}{}\n",
                        Ran::word(*status),
                        self.partial_link_md(dir)
                    );
                }
                Ran::NotRun { experiment, title } => {
                    md += &format!(
                        "\n## `{experiment}`: {title}\n\n**NOT RUN**: the job was interrupted first\n"
                    );
                }
            }
        }
        md
    }

    /// One HTML page with every plot inlined; `read_svg` supplies each plot's SVG text. Every
    /// string is escaped by the template (maud); only the SVG files we wrote go in raw.
    pub fn to_html(&self, read_svg: impl Fn(&Path) -> Option<String>) -> String {
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "attention-lab results" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    h1 { "attention-lab: every claim, measured" }
                    p {
                        (self.runs.len()) " experiments on " code { (self.backend) } ", "
                        (format!("{:.1}", self.wall_seconds)) " s in all (finished "
                        (self.stamp) " UTC); " (self.counts().sentence()) "."
                    }
                    p { "Repeat: " code { (self.command) } }
                    (self.explorer())
                    h2 { "Claims and verdicts" }
                    table {
                        tr { th { "experiment" } th { "verdict" } th { "claim" } th { "evidence" } }
                        @for r in self.runs {
                            (self.summary_rows(r))
                        }
                    }
                    @for r in self.runs {
                        (self.section(r, &read_svg))
                    }
                }
            }
        };
        markup.into_string()
    }

    /// How to open the explorer: on any sentence, and on the first run here that saved models.
    fn explorer(&self) -> Markup {
        let trained = self.runs.iter().find_map(|r| match r {
            Ran::Done(o) if o.dir.join("models").is_dir() => Some(&o.dir),
            _ => None,
        });
        html! {
            p {
                "Look inside the block, live: " code { "cargo run --release --bin explore" }
                ", then open " a href="http://127.0.0.1:7878/" { "http://127.0.0.1:7878/" }
                " (a sentence, every pitfall as a control, the step-by-step tables)."
                @if let Some(dir) = trained {
                    " With this run's trained models: "
                    code { "cargo run --release --bin explore -- --run " (dir.display()) }
                    "."
                }
            }
        }
    }

    /// The rows of the claims table for one experiment.
    fn summary_rows(&self, r: &Ran) -> Markup {
        html! {
            @match r {
                Ran::Done(o) => {
                    @for v in &o.verdicts {
                        tr {
                            td { a href={ "#" (o.experiment) } { (o.experiment) } }
                            td class=(class(v.outcome)) { (v.word()) }
                            td { (v.claim) }
                            td { (v.evidence) }
                        }
                    }
                }
                Ran::Failed { experiment, status, error, dir, .. } => {
                    tr {
                        td { (experiment) }
                        td class="no" { (Ran::word(*status)) }
                        td colspan="2" { (error) (self.partial_link_html(dir)) }
                    }
                }
                Ran::NotRun { experiment, .. } => {
                    tr {
                        td { (experiment) }
                        td class="maybe" { "NOT RUN" }
                        td colspan="2" { "the job was interrupted first" }
                    }
                }
            }
        }
    }

    /// One experiment's section: claim, verdicts, findings, run folder and inlined plots.
    fn section(&self, r: &Ran, read_svg: &impl Fn(&Path) -> Option<String>) -> Markup {
        html! {
            @match r {
                Ran::Done(o) => {
                    h2 id=(o.experiment) { code { (o.experiment) } ": " (o.title) }
                    p { (o.claim) }
                    ul {
                        @for v in &o.verdicts {
                            li { span class=(class(v.outcome)) { (v.word()) } ": " (v.claim) ". " (v.evidence) }
                        }
                        @for f in &o.findings {
                            li { "finding: " (f) }
                        }
                    }
                    p {
                        "Run folder: "
                        @for (i, f) in RUN_FILES.iter().enumerate() {
                            @if i > 0 { " · " }
                            a href=(self.link(&o.dir, f)) { (f) }
                        }
                        " (" (format!("{:.1}", o.seconds)) " s on " code { (o.backend) } ")"
                    }
                    div class="plots" {
                        @for (file, title) in &o.plots {
                            figure {
                                @match read_svg(&o.dir.join(format!("{file}.svg"))) {
                                    // Our own plotters output, inlined as it is.
                                    Some(svg) => (PreEscaped(strip_prolog(&svg).to_string())),
                                    None => p { "(" (file) ".svg could not be read)" },
                                }
                                figcaption { (title) }
                            }
                        }
                    }
                }
                Ran::Failed { experiment, title, status, error, dir } => {
                    h2 id=(experiment) { code { (experiment) } ": " (title) }
                    p class="no" { (Ran::word(*status)) ": " (error) (self.partial_link_html(dir)) }
                }
                Ran::NotRun { experiment, title } => {
                    h2 id=(experiment) { code { (experiment) } ": " (title) }
                    p class="maybe" { "NOT RUN: the job was interrupted first" }
                }
            }
        }
    }

    /// Writes `index.md` and `index.html` under the root; returns their paths.
    pub fn write(&self) -> Result<(PathBuf, PathBuf), WriteError> {
        let md = write_atomic(&self.root.join("index.md"), self.to_markdown().as_bytes())?;
        let html = self.to_html(|p| std::fs::read_to_string(p).ok());
        let html = write_atomic(&self.root.join("index.html"), html.as_bytes())?;
        Ok((md, html))
    }
}

/// The page's style sheet.
const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.ok{color:#1a7f37;font-weight:bold}.no{color:#cf222e;font-weight:bold}.maybe{color:#9a6700;font-weight:bold}.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}.plots svg{max-width:540px;height:auto;border:1px solid #eee}code{background:#f4f4f4;padding:1px 4px}";

/// An SVG document without its XML declaration, ready to inline.
fn strip_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::report::Verdict;

    const ROOT: &str = "/tmp/out";

    /// A finished run of `demo` in `ROOT/demo/<id>` with one verdict.
    fn done(id: &str, title: &'static str, plots: Vec<(String, String)>, verdict: Verdict) -> Ran {
        Ran::Done(RunOutcome {
            experiment: "demo",
            title,
            claim: "claim",
            backend: "flex",
            dir: Path::new(ROOT).join("demo").join(id),
            plots,
            verdicts: vec![verdict],
            findings: vec![],
            seconds: 1.0,
        })
    }

    fn page(runs: &[Ran]) -> IndexPage<'_> {
        IndexPage {
            runs,
            root: Path::new(ROOT),
            backend: "flex",
            wall_seconds: 1.0,
            stamp: "now",
            command: "cargo run",
        }
    }

    #[test]
    fn links_are_relative_and_text_is_escaped() {
        let runs = [done(
            "20260101-000000",
            "a < b",
            vec![("p".into(), "P".into())],
            Verdict::new("x & y", true, "1 < 2"),
        )];
        let page = page(&runs);
        let md = page.to_markdown();
        assert!(md.contains("(demo/20260101-000000/report.md)"), "{md}");
        let html = page.to_html(|_| Some("<?xml version=\"1.0\"?><svg>plot</svg>".into()));
        assert!(
            html.contains("x &amp; y") && html.contains("1 &lt; 2"),
            "{html}"
        );
        // Nowhere raw, neither in the table nor in the section.
        assert!(
            !html.contains("x & y") && !html.contains("1 < 2") && !html.contains("a < b"),
            "{html}"
        );
        assert!(
            html.contains("<figure><svg>plot</svg>") && !html.contains("<?xml"),
            "{html}"
        );
    }

    #[test]
    fn incomplete_runs_and_inconclusive_verdicts_are_shown_as_such() {
        let runs = [
            done("a", "t", vec![], Verdict::new("x", true, "x = NaN")),
            Ran::Failed {
                experiment: "broken",
                title: "t",
                status: RunStatus::Interrupted,
                error: "interrupted".into(),
                dir: Some(Path::new(ROOT).join("broken").join("b")),
            },
            Ran::NotRun {
                experiment: "later",
                title: "t",
            },
        ];
        let page = page(&runs);
        let md = page.to_markdown();
        assert!(md.contains("| INCONCLUSIVE | x |"), "{md}");
        assert!(md.contains("| `broken` | INTERRUPTED | interrupted (partial results: [report.md](broken/b/report.md)) |"), "{md}");
        assert!(md.contains("| `later` | NOT RUN |"), "{md}");
        assert!(md.contains("0 verdicts confirmed, 0 not confirmed, 1 inconclusive, 2 experiments did not complete"), "{md}");
        let html = page.to_html(|_| None);
        assert!(html.contains("class=\"maybe\">INCONCLUSIVE"), "{html}");
        assert!(html.contains("<a href=\"broken/b/report.md\">"), "{html}");
    }
}
