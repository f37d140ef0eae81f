//! Results on disk: `results/<experiment>/<run-id>/` with the resolved `config.toml`, a long-format
//! `metrics.csv`, `summary.json`, SVG plots and a `report.md` that shows them with the verdicts.
//!
//! Every file is written to a temporary name and renamed into place, so a reader never sees half
//! a file, and a run folder is never reused: its id is a UTC timestamp, made unique by a suffix.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::util::rng::stable_hash;

/// One measurement: a row of `metrics.csv`. Labels that do not apply stay empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// Which part of the experiment, e.g. `init` or `train`.
    pub part: String,
    /// Which configuration of the sweep, e.g. `d_k=64 scale=none`.
    pub config: String,
    pub seed: Option<u64>,
    pub step: Option<usize>,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub metric: String,
    pub value: f64,
}

impl MetricRow {
    pub fn new(part: &str, config: &str, metric: &str, value: f64) -> Self {
        Self {
            part: part.into(),
            config: config.into(),
            seed: None,
            step: None,
            layer: None,
            head: None,
            metric: metric.into(),
            value,
        }
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn step(mut self, step: usize) -> Self {
        self.step = Some(step);
        self
    }

    pub fn layer(mut self, layer: Option<usize>) -> Self {
        self.layer = layer;
        self
    }

    pub fn head(mut self, head: usize) -> Self {
        self.head = Some(head);
        self
    }
}

/// A claim tested against the run's own data.
///
/// A decision is only as good as its numbers: when the evidence holds a number that is not finite
/// (`NaN`, `inf`, as Rust prints them), the measurement failed and the verdict is
/// [`Outcome::Inconclusive`] whichever way the comparison went, since `NaN < x` is simply false.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub claim: String,
    pub outcome: Outcome,
    /// The measured numbers the decision rests on.
    pub evidence: String,
}

/// How a claim fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    NotConfirmed,
    /// The measurement itself failed (a non-finite number), or a condition the claim needs did
    /// not hold (e.g. models that never fit their training data), so the data decide nothing.
    Inconclusive,
}

impl Verdict {
    /// The verdict on `claim`: `confirmed` as computed from the data, unless `evidence` shows a
    /// non-finite number, which makes it inconclusive.
    pub fn new(claim: impl Into<String>, confirmed: bool, evidence: impl Into<String>) -> Self {
        let evidence = evidence.into();
        let outcome = if shows_non_finite(&evidence) {
            Outcome::Inconclusive
        } else if confirmed {
            Outcome::Confirmed
        } else {
            Outcome::NotConfirmed
        };
        Self {
            claim: claim.into(),
            outcome,
            evidence,
        }
    }

    /// A verdict the data cannot decide, because a condition the claim needs did not hold;
    /// `evidence` says which.
    pub fn inconclusive(claim: impl Into<String>, evidence: impl Into<String>) -> Self {
        Self {
            claim: claim.into(),
            outcome: Outcome::Inconclusive,
            evidence: evidence.into(),
        }
    }

    pub fn confirmed(&self) -> bool {
        self.outcome == Outcome::Confirmed
    }

    pub fn word(&self) -> &'static str {
        match self.outcome {
            Outcome::Confirmed => "CONFIRMED",
            Outcome::NotConfirmed => "NOT CONFIRMED",
            Outcome::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// Whether `text` holds a number as Rust prints a non-finite one: the word `NaN` or `inf`.
fn shows_non_finite(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == "NaN" || word == "inf")
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Verdict", 4)?;
        s.serialize_field("claim", &self.claim)?;
        s.serialize_field("verdict", self.word())?;
        s.serialize_field("confirmed", &self.confirmed())?;
        s.serialize_field("evidence", &self.evidence)?;
        s.end()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Outcome::Inconclusive if shows_non_finite(&self.evidence) => write!(
                f,
                "{}: {} (a measurement is not a finite number: {})",
                self.word(),
                self.claim,
                self.evidence
            ),
            _ => write!(f, "{}: {} ({})", self.word(), self.claim, self.evidence),
        }
    }
}

/// A markdown table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let mut out = vec![line(&self.header)];
        out.push(format!("|{}", "---|".repeat(self.header.len())));
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }

    /// Fixed-width text for the terminal.
    pub fn to_text(&self) -> String {
        let n = self.header.len();
        let width: Vec<usize> = (0..n)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&width)
                .map(|(s, w)| format!("{s:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = vec![self.title.clone(), line(&self.header)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// A plot to be written as `<file>.svg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File stem, e.g. `grad_vs_dk`.
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// One number per head, layer by layer, for a table cell: `L1: 0.12 0.80; L2: 0.05 0.91`, the
/// layers numbered from `first_layer`.
pub fn per_head_text(per_layer: &[Vec<f64>], first_layer: usize) -> String {
    per_layer
        .iter()
        .enumerate()
        .map(|(l, heads)| {
            let cells: Vec<String> = heads.iter().map(|a| format!("{a:.2}")).collect();
            format!("L{}: {}", l + first_layer, cells.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A file stem safe on every file system: letters, digits, `.`, `_` and `-` kept, anything else
/// `_`, and at most [`MAX_STEM`] bytes. A longer name keeps its start and gets a hash of the whole,
/// so two long names that share a start stay two files. (Stems built from formatted numbers can
/// otherwise exceed the 255-byte limit of a file name.)
pub fn file_stem(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.len() <= MAX_STEM && !clean.is_empty() {
        return clean;
    }
    let hash = stable_hash(name.bytes());
    format!("{}-{hash:016x}", &clean[..clean.len().min(MAX_STEM - 17)])
}

/// The longest stem [`file_stem`] returns, well under the usual 255-byte limit, leaving room for
/// an extension and a temporary suffix.
pub const MAX_STEM: usize = 120;

/// Could not write a result file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}")]
pub struct WriteError {
    pub path: PathBuf,
    pub reason: String,
}

/// One run's results folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
    pub id: String,
}

impl RunDir {
    /// Creates `root/<experiment>/<UTC timestamp>[-n]`, never an existing folder.
    pub fn create(root: &Path, experiment: &str) -> Result<Self, WriteError> {
        let parent = root.join(experiment);
        fs::create_dir_all(&parent).map_err(|e| write_error(&parent, e))?;
        let stamp = utc_stamp(SystemTime::now());
        for n in 1.. {
            let id = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let path = parent.join(&id);
            // create_dir (not _all) fails if the folder exists, even when two runs race.
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, id }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(write_error(&path, e)),
            }
        }
        unreachable!("the loop only ends by returning")
    }

    /// Writes `name` atomically: a temporary file in the same folder, then a rename.
    /// Writes `name` (which may name a subfolder, e.g. `models/a.bpk`) atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, WriteError> {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        write_atomic(&path, bytes)
    }

    /// Writes `metrics.csv` in long format, one row per measurement.
    pub fn write_metrics(&self, rows: &[MetricRow]) -> Result<PathBuf, WriteError> {
        let path = self.path.join("metrics.csv");
        let mut writer = csv::Writer::from_writer(Vec::new());
        if rows.is_empty() {
            writer
                .write_record([
                    "part", "config", "seed", "step", "layer", "head", "metric", "value",
                ])
                .map_err(|e| write_error(&path, e))?;
        }
        for row in rows {
            writer.serialize(row).map_err(|e| write_error(&path, e))?;
        }
        let bytes = writer.into_inner().map_err(|e| write_error(&path, e))?;
        write_atomic(&path, &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<PathBuf, WriteError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        write_error(path, e)
    })?;
    Ok(path.to_path_buf())
}

fn write_error(path: &Path, e: impl ToString) -> WriteError {
    WriteError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Everything `report.md` shows.
#[derive(Debug, Clone, Copy)]
pub struct ReportPage<'a> {
    pub experiment: &'a str,
    pub title: &'a str,
    pub claim: &'a str,
    pub verdicts: &'a [Verdict],
    pub findings: &'a [String],
    pub tables: &'a [Table],
    pub plots: &'a [Plot],
    /// Backend, seeds, wall time, how to repeat.
    pub run_lines: &'a [String],
    /// How the run ended; anything but complete is said at the top, with the error.
    pub status: RunStatus,
    pub error: Option<&'a str>,
}

impl ReportPage<'_> {
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# `{}`: {}\n\n", self.experiment, self.title);
        if self.status != RunStatus::Complete {
            md += &format!(
                "> **This run is {}**: {}. What it measured before it stopped is below and in \
                 `metrics.csv`; its verdicts are incomplete.\n\n",
                self.status.word(),
                self.error.unwrap_or("no error was recorded")
            );
        }
        md += &format!("{}\n\n## Verdicts\n\n", self.claim);
        for v in self.verdicts {
            md += &format!("- **{}**: {}. {}\n", v.word(), v.claim, v.evidence);
        }
        if !self.findings.is_empty() {
            md += "\n## Findings\n\n";
            for f in self.findings {
                md += &format!("- {f}\n");
            }
        }
        for t in self.tables {
            md += &format!("\n## {}\n\n{}\n", t.title, t.to_markdown());
        }
        if !self.plots.is_empty() {
            md += "\n## Plots\n";
            for p in self.plots {
                md += &format!("\n### {}\n\n![{}]({}.svg)\n", p.title, p.title, p.file);
            }
        }
        md += "\n## Run\n\n";
        for line in self.run_lines {
            md += &format!("- {line}\n");
        }
        md
    }
}

/// How a run ended, as `summary.json`'s `status` says. It is written as `running` when the run
/// folder is made and replaced when the run ends, so a folder whose process died without a
/// word (an abort, SIGKILL, power loss) still says `running`, next to the `pid` that was running
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn word(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// What a finished run left behind.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub experiment: &'static str,
    pub title: &'static str,
    pub claim: &'static str,
    pub backend: &'static str,
    pub dir: PathBuf,
    /// (file stem, title) of each plot written as `<dir>/<file>.svg`.
    pub plots: Vec<(String, String)>,
    pub verdicts: Vec<Verdict>,
    pub findings: Vec<String>,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_stay_short_safe_and_distinct() {
        assert_eq!(file_stem("weights_d_k=64"), "weights_d_k_64");
        let long_a = format!("loss_{}", "1.0e-300,".repeat(60));
        let long_b = format!("loss_{}", "1.0e-300;".repeat(60));
        let (a, b) = (file_stem(&long_a), file_stem(&long_b));
        assert!(a.len() <= MAX_STEM && b.len() <= MAX_STEM, "{a}");
        assert_ne!(a, b);
        assert_eq!(file_stem("../../etc"), "_.._etc");
        assert!(!file_stem("").is_empty());
    }

    #[test]
    fn non_finite_evidence_makes_a_verdict_inconclusive() {
        let nan = f64::NAN;
        let v = Verdict::new("x falls", nan < 1.0, format!("x = {nan:.3}"));
        assert_eq!(v.outcome, Outcome::Inconclusive);
        assert_eq!(v.word(), "INCONCLUSIVE");
        let inf = -f64::INFINITY;
        let v = Verdict::new("x falls", true, format!("falls {inf}×"));
        assert_eq!(v.outcome, Outcome::Inconclusive);
        let v = Verdict::new("x falls", false, "x = 3.0 (information: infinite patience)");
        assert_eq!(v.outcome, Outcome::NotConfirmed);
        assert_eq!(
            serde_json::to_value(Verdict::new("c", true, "1.5")).unwrap(),
            serde_json::json!({"claim": "c", "verdict": "CONFIRMED", "confirmed": true, "evidence": "1.5"})
        );
    }
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        // 2026-11-23 15:58:44 UTC = 1795449524 s.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_449_524);
        assert_eq!(utc_stamp(t), "20261123-155844");
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2024-02-29 (leap day) 00:00:00 = 1709164800 s.
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_164_800)),
            "20240229-000000"
        );
    }

    #[test]
    fn run_folders_are_never_reused_and_writes_are_atomic() {
        let root =
            std::env::temp_dir().join(format!("attention-lab-report-{}", std::process::id()));
        let a = RunDir::create(&root, "demo").unwrap();
        let b = RunDir::create(&root, "demo").unwrap();
        assert_ne!(a.path, b.path);
        a.write("x.txt", b"one").unwrap();
        a.write("x.txt", b"two").unwrap();
        assert_eq!(fs::read_to_string(a.path.join("x.txt")).unwrap(), "two");
        let rows = [MetricRow::new("init", "d_k=8", "entropy", 1.5).seed(3)];
        a.write_metrics(&rows).unwrap();
        let csv = fs::read_to_string(a.path.join("metrics.csv")).unwrap();
        assert_eq!(
            csv,
            "part,config,seed,step,layer,head,metric,value\ninit,d_k=8,3,,,,entropy,1.5\n"
        );
        let leftovers = fs::read_dir(&a.path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(leftovers, 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tables_render() {
        let mut t = Table::new("T", &["a", "bb"]);
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(t.to_markdown(), "| a | bb |\n|---|---|\n| 1 | 2 |");
        assert_eq!(t.to_text(), "T\na  bb\n1  2");
    }
}
