//! The README's second command, `cargo test --release` straight after the first, builds only this
//! crate, its tests and the test-only crates: no crate the first command built is built again.
//!
//! Cargo builds a shared crate twice when the dev-dependencies switch on a feature the normal
//! build leaves off (fantoccini's URL stack turning on `syn`'s `fold` rebuilt every proc macro,
//! then Burn, wgpu and cubecl). `Cargo.toml` switches those features on in the normal build too;
//! this test asks Cargo for both commands' unit graphs (what each would compile, with which
//! features) and fails on any unit the second would compile with features the first did not.
//!
//! `--unit-graph` is an unstable Cargo flag, reached on a stable toolchain with
//! `RUSTC_BOOTSTRAP=1`; it compiles nothing. Not `--offline`: on a fresh machine Cargo may still
//! need index entries the build did not fetch. `cargo tree` cannot answer this: it merges a crate
//! used by proc macros (built for the host) with the same crate used by the library.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// A unit: package id, target name and mode (`build`, `test`, `run-custom-build`).
type Unit = (String, String, String);

/// Each unit `cargo <args> --unit-graph` would compile, with the feature sets it would compile it
/// with.
fn unit_graph(args: &[&str]) -> BTreeMap<Unit, BTreeSet<Vec<String>>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .args(["--release", "--unit-graph", "-Z", "unstable-options"])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo {} --unit-graph failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let graph: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a unit graph");
    let mut units: BTreeMap<Unit, BTreeSet<Vec<String>>> = BTreeMap::new();
    for unit in graph["units"].as_array().expect("units") {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let mut features: Vec<String> = unit["features"]
            .as_array()
            .expect("features")
            .iter()
            .map(text)
            .collect();
        features.sort();
        let key = (
            text(&unit["pkg_id"]),
            text(&unit["target"]["name"]),
            text(&unit["mode"]),
        );
        units.entry(key).or_default().insert(features);
    }
    units
}

/// The units the second command would compile again: those the first built, now with other
/// features, as `package (features)` lines.
fn rebuilt(first: &[&str], second: &[&str]) -> Vec<String> {
    let built = unit_graph(first);
    let tested = unit_graph(second);
    assert!(
        built.len() > 100,
        "the first command's graph has only {} units",
        built.len()
    );
    let mut again = Vec::new();
    for (unit, feature_sets) in &tested {
        let Some(before) = built.get(unit) else {
            continue; // new to the tests (fantoccini, proptest, the test targets): built once
        };
        for features in feature_sets.difference(before) {
            let added: Vec<&str> = features
                .iter()
                .filter(|f| before.iter().all(|b| !b.contains(f)))
                .map(String::as_str)
                .collect();
            again.push(format!(
                "{} ({}): adds {}",
                unit.0,
                unit.2,
                added.join(", ")
            ));
        }
    }
    again
}

#[test]
fn cargo_test_after_the_first_command_rebuilds_no_dependency() {
    let again = rebuilt(&["build", "--bin", "reproduce"], &["test", "--no-run"]);
    assert!(
        again.is_empty(),
        "`cargo test --release` would compile these units again, with features \
         `cargo run --release --bin reproduce` did not give them; switch the features on in \
         Cargo.toml (see the comment above [build-dependencies]):\n{}",
        again.join("\n")
    );
}
