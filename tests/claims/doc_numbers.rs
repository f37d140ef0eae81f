//! The docs quote no measured number by hand. A measured number (a time, a ratio, a loss, an
//! accuracy) changes when the code changes, so it lives in a generated file under
//! `docs/results/` (written by `reproduce --publish`, `bench --markdown` or
//! `scripts/time-commands.sh`) or in a generated block of the README, and prose links to it.
//!
//! What this test reads as a measured number, in README.md and every page of `docs/` outside
//! `docs/results/`: a decimal (`0.84`), or a number with a unit of time, memory or ratio (`23 min`,
//! `44 MiB`, `29×`, `5 %`). It skips fenced code, inline code (settings and formulas are written
//! as code: `lr = 3e-3`, `≥ 0.9`), link targets, and the generated blocks between marker lines.
//! Version numbers (`0.22.1`) are not measurements.

use std::path::PathBuf;

/// The units after which a number reads as measured.
const UNITS: &[&str] = &[
    "ms", "s", "sec", "seconds", "min", "minutes", "h", "hours", "MiB", "GiB", "KiB", "MB", "GB",
    "%", "×", "x", "GFLOP/s",
];

/// Pages written by hand: every published page but the generated ones under `docs/results/`.
fn hand_written() -> Vec<PathBuf> {
    crate::common::documents()
        .into_iter()
        .filter(|p| !p.starts_with("docs/results"))
        .collect()
}

/// `line` with inline code and link targets blanked out.
fn prose(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else if in_code {
            out.push(' ');
        } else if c == ']' && chars.peek() == Some(&'(') {
            // A link target: up to its closing parenthesis.
            out.push(']');
            for t in chars.by_ref() {
                if t == ')' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The measured-looking numbers in one line of prose.
fn measured_numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if !starts_number {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || (matches!(chars[i], '.' | ',')
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
        {
            i += 1;
        }
        let number: String = chars[start..i].iter().collect();
        let glued: String = chars[i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '/')
            .collect();
        let dots = number.matches('.').count();
        let decimal = dots == 1;
        let with_unit = if glued.is_empty() {
            let rest: String = chars[i..].iter().collect();
            let unit = rest.trim_start_matches(' ');
            let word: String = unit
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ';' | ')' | '.' | ':'))
                .collect();
            UNITS.contains(&word.as_str()) || unit.starts_with('%') || unit.starts_with('×')
        } else if UNITS.contains(&glued.as_str()) {
            true // `16ms`, `29x`
        } else {
            continue; // a name with a number in it: `d_k8`, `1e-4`'s mantissa, `FlashAttention-2`
        };
        if dots <= 1 && (decimal || with_unit) {
            found.push(number);
        }
    }
    found
}

/// Every hand-typed measured number in `text`, as `line: number`.
fn offending(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut fenced, mut generated) = (false, false);
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if trimmed.starts_with("<!--") && trimmed.contains(": begin") {
            generated = true;
        }
        if trimmed.starts_with("<!--") && trimmed.contains(": end") {
            generated = false;
            continue;
        }
        if fenced || generated {
            continue;
        }
        for number in measured_numbers(&prose(line)) {
            out.push(format!("line {}: {number}: {}", n + 1, line.trim()));
        }
    }
    out
}

#[test]
fn hand_written_pages_quote_no_measured_number() {
    let mut all = Vec::new();
    for page in hand_written() {
        let text = std::fs::read_to_string(&page).unwrap();
        for hit in offending(&text) {
            all.push(format!("{}: {hit}", page.display()));
        }
    }
    assert!(
        all.is_empty(),
        "{} hand-typed measured numbers: link to the generated file under docs/results/ that \
         holds each, or write a setting as code (`lr = 3e-3`):\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn the_scanner_tells_measurements_from_settings_and_names() {
    assert_eq!(measured_numbers("accuracy 0.838 at L"), ["0.838"]);
    assert_eq!(
        measured_numbers("took 436 s, then 23 min, or 16ms"),
        ["436", "23", "16"]
    );
    assert_eq!(
        measured_numbers("1/29 of its memory, 44 MiB, 29× less, 5 % more"),
        ["44", "29", "5"]
    );
    assert!(
        measured_numbers("Burn 0.22.1 on 2 cores, d_k = 64, FlashAttention-2, x86_64, 1e-4")
            .is_empty()
    );
    assert!(
        measured_numbers(&prose(
            "the threshold `≥ 0.9` and [link](docs/results/a.md#0.5)"
        ))
        .is_empty()
    );
    let page = "a 0.5\n```\n1.5 s\n```\n<!-- glance: begin -->\n2.5\n<!-- glance: end -->\nb 3.5\n";
    assert_eq!(
        offending(page),
        ["line 1: 0.5: a 0.5", "line 8: 3.5: b 3.5"]
    );
}
