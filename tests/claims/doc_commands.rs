//! The commands the README and `docs/` show cannot go stale: every `cargo run --release --bin …`
//! line in them runs here with `--check`, which parses it, validates its config and estimates its
//! memory without running or writing anything. A renamed flag, a removed option or a config key
//! that no longer exists fails this test with the line that holds it.
//!
//! A command may name a file the reader brings (`--input mine.json`, `--run results/…/<run-id>`):
//! it passes when `--check` refuses it by naming that missing path (the value of a path flag,
//! [`PATH_FLAGS`]), and for nothing else.

use std::path::Path;
use std::process::Command;

/// The binary `name` as built for these tests; `None` for one this build leaves out (the remote
/// server without its feature).
fn built(name: &str) -> Option<&'static str> {
    Some(match name {
        "explore" => env!("CARGO_BIN_EXE_explore"),
        #[cfg(feature = "remote-server")]
        "remote_server" => env!("CARGO_BIN_EXE_remote_server"),
        #[cfg(not(feature = "remote-server"))]
        "remote_server" => return None,
        other => crate::common::binary(other),
    })
}

/// One documented command: where it stands, the binary, its arguments after `--`, and the
/// variables an `export` line above it in the same code block sets.
#[derive(Debug, PartialEq)]
struct Documented {
    place: String,
    bin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Splits a shell line into words: single and double quotes group, a `#` after a space starts a
/// comment, and `&`, `&&`, `|` and `;` end the command.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut in_word, mut quote) = (String::new(), false, None);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, '&' | '|' | ';') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Every `cargo run … --bin NAME [-- ARGS]` in `text`; a line ending in `\` goes on.
fn commands(file: &str, text: &str) -> Vec<Documented> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let mut line = lines[i].to_string();
        while line.trim_end().ends_with('\\') && i + 1 < lines.len() {
            line = line.trim_end().trim_end_matches('\\').to_string() + " " + lines[i + 1];
            i += 1;
        }
        i += 1;
        if line.trim_start().starts_with("```") {
            env.clear();
        }
        // `export A=1 B=$(…)`: a value the reader makes up stands as a placeholder.
        if let Some(rest) = line.trim_start().strip_prefix("export ") {
            for word in words(rest) {
                if let Some((name, value)) = word.split_once('=') {
                    let value = if value.contains(['$', '<']) {
                        "placeholder"
                    } else {
                        value
                    };
                    env.retain(|(n, _)| n != name);
                    env.push((name.to_string(), value.to_string()));
                }
            }
        }
        let Some(start) = line.find("cargo run") else {
            continue;
        };
        let mut command = &line[start..];
        // Inline code: the command ends where its span does.
        if line[..start].ends_with('`') {
            command = command.split('`').next().unwrap_or(command);
        }
        let words = words(command);
        let Some(bin) = words.iter().position(|w| w == "--bin") else {
            continue;
        };
        let named = words.get(bin + 1);
        if !named.is_some_and(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            continue; // prose about the flag itself: "every `cargo run --release --bin …` line"
        }
        let args = match words.iter().position(|w| w == "--") {
            Some(dashes) => words[dashes + 1..].to_vec(),
            None => Vec::new(),
        };
        found.push(Documented {
            place: format!("{file}:{number}"),
            bin: words[bin + 1].clone(),
            args: args.iter().map(|a| without_variables(a)).collect(),
            env: env.clone(),
        });
    }
    found
}

/// A shell variable (a loop's `$i`) stands for a number in the examples: `$i/3` reads `0/3`.
fn without_variables(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars
                .next_if(|c| c.is_alphanumeric() || *c == '_')
                .is_some()
            {}
            out.push('0');
        } else {
            out.push(c);
        }
    }
    out
}

/// The flags whose value is a file or folder the reader brings or the run writes.
const PATH_FLAGS: [&str; 7] = [
    "--config",
    "--configs",
    "--out",
    "--input",
    "--json",
    "--run",
    "--merge",
];

/// The values of `args`' path flags.
fn brought_files(args: &[String]) -> impl Iterator<Item = &str> {
    args.windows(2)
        .filter(|w| PATH_FLAGS.contains(&w[0].as_str()))
        .map(|w| w[1].as_str())
}

#[test]
fn the_command_splitter_reads_quotes_comments_and_continuations() {
    let text = "cargo run --release --bin scaling -- --set 'sweep.d_k=[32, 512]'   # a comment\n\
                cargo run --release --bin bench -- --peer \"python x.py\" \\\n  --peer-runs 5\n\
                  cargo run --release --bin mup_coord -- --shard $i/3 --sweep-id widths &\n\
                cargo run --release --bin reproduce\n\
                | 1. `cargo run --release --bin trace -- --causal`: the run | and `cargo run --bin` or `cargo run --bin …` prose\n";
    let found = commands("t.md", text);
    let args: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|d| (d.bin.as_str(), d.args.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        args,
        vec![
            ("scaling", vec!["--set", "sweep.d_k=[32, 512]"]),
            ("bench", vec!["--peer", "python x.py", "--peer-runs", "5"]),
            ("mup_coord", vec!["--shard", "0/3", "--sweep-id", "widths"]),
            ("reproduce", vec![]),
            ("trace", vec!["--causal"]),
        ]
    );
    assert_eq!(found[2].place, "t.md:4");
    let block = "```sh\nexport TOKEN=$(openssl rand -hex 32) MODE=fast\ncargo run --bin a\n```\ncargo run --bin b\n";
    let found = commands("u.md", block);
    assert_eq!(
        found[0].env,
        vec![
            ("TOKEN".to_string(), "placeholder".to_string()),
            ("MODE".to_string(), "fast".to_string())
        ]
    );
    assert!(
        found[1].env.is_empty(),
        "a code block's exports end with it"
    );
}

#[test]
fn every_documented_command_passes_its_check() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in crate::common::documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for command in commands(&doc.display().to_string(), &text) {
            let Some(binary) = built(&command.bin) else {
                eprintln!(
                    "{}: {} is not built here; not checked",
                    command.place, command.bin
                );
                continue;
            };
            let mut run = Command::new(binary);
            run.args(&command.args).envs(command.env.iter().cloned());
            if !command.args.iter().any(|a| a == "--check") {
                run.arg("--check");
            }
            let out = run.output().unwrap();
            checked += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            // A file the reader brings, refused by name, is the only acceptable failure.
            let missing_file = out.status.code() == Some(2)
                && !stderr.contains("Usage:")
                && brought_files(&command.args)
                    .any(|path| !Path::new(path).exists() && stderr.contains(path));
            if !out.status.success() && !missing_file {
                failures.push(format!(
                    "{}: `{} {}` --check exited {:?}: {}",
                    command.place,
                    command.bin,
                    command.args.join(" "),
                    out.status.code(),
                    stderr.trim()
                ));
            }
        }
    }
    assert!(checked >= 30, "only {checked} documented commands found");
    assert!(
        failures.is_empty(),
        "stale commands:\n{}",
        failures.join("\n")
    );
}

/// `--check` writes nothing, on every kind of binary, and still refuses what a run would refuse.
#[test]
fn check_writes_nothing_and_refuses_what_a_run_would() {
    let scratch = std::env::temp_dir().join(format!("attention-lab-check-{}", std::process::id()));
    let out = scratch.join("results");
    let out_arg = out.to_str().unwrap();
    let json = scratch.join("trace.json");
    let runs: [(&str, Vec<&str>); 5] = [
        ("scaling", vec!["--out", out_arg]),
        ("reproduce", vec!["--out", out_arg]),
        ("trace", vec!["--json", json.to_str().unwrap()]),
        ("bench", vec!["--sizes", "16"]),
        ("explore", vec!["--port", "0"]),
    ];
    for (bin, args) in runs {
        let run = Command::new(built(bin).unwrap())
            .args(&args)
            .arg("--check")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && stdout.contains("checked"),
            "{bin}: {stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            !scratch.exists(),
            "{bin} --check wrote {}",
            scratch.display()
        );
    }
    let bad = Command::new(built("scaling").unwrap())
        .args(["--set", "train.steps=0", "--check", "--out", out_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("train.steps"), "{stderr}");
    assert!(!scratch.exists());
}
