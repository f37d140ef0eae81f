//! The lab's own promises: seeded runs repeat exactly, a diverging run stops cleanly and keeps
//! what it recorded, and init-time measurements agree across backends.

use std::process::Command;

use attention_lab::block::scale::ScoreScale;
use attention_lab::experiments::dk_vs_dmodel::measure_heads;
use attention_lab::experiments::scaling::measure_init;
use attention_lab::lab::model::ModelConfig;
use attention_lab::lab::tasks::{Task, TaskConfig, TaskKind};
use attention_lab::lab::train::{TrainConfig, train};
use attention_lab::util::device::BackendKind;
use burn::prelude::*;

use crate::common::*;

fn recall() -> Task {
    Task::new(TaskConfig::new(TaskKind::Recall, 6, 6)).unwrap()
}

fn short(lr: f64) -> TrainConfig {
    TrainConfig::new(25, 16, lr)
}

#[test]
fn seeded_cpu_runs_are_bit_identical() {
    for kind in [BackendKind::Flex, BackendKind::Ndarray] {
        let device = kind.autodiff_device().unwrap();
        let mut model = ModelConfig::new(16, 2);
        model.n_layers = 2;
        let first = train(&model, &recall(), &short(3e-3), 7, &device, &mut |_| {}).unwrap();
        let second = train(&model, &recall(), &short(3e-3), 7, &device, &mut |_| {}).unwrap();
        assert_eq!(first.records.len(), 25);
        // Exact equality of every loss, accuracy, gradient norm, entropy and logit std.
        assert_eq!(
            first.records, second.records,
            "{kind}: two runs with seed 7 differ"
        );
        let other = train(&model, &recall(), &short(3e-3), 8, &device, &mut |_| {}).unwrap();
        assert_ne!(
            first.records, other.records,
            "{kind}: the seed changes nothing"
        );
    }
}

#[test]
fn a_diverging_run_stops_and_keeps_its_records() {
    let device = BackendKind::Flex.autodiff_device().unwrap();
    let run = train(
        &ModelConfig::new(16, 2),
        &recall(),
        &short(1e9),
        0,
        &device,
        &mut |_| {},
    )
    .unwrap();
    let d = run.divergence.as_ref().expect("lr = 1e9 must diverge");
    assert!(d.step > 0 && d.step < 25, "{d}");
    assert!(!d.value.is_finite(), "{d}");
    assert!(d.quantity == "loss" || d.quantity.starts_with('‖'), "{d}");
    assert_eq!(
        run.records.len(),
        d.step + 1,
        "every step up to the divergence is kept"
    );
    assert!(run.records[0].loss.is_finite());
}

#[test]
fn a_diverging_experiment_is_a_finding_with_its_csv() {
    let out = std::env::temp_dir().join(format!("attention-lab-diverge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let result = Command::new(env!("CARGO_BIN_EXE_scaling"))
        .args([
            "--config",
            "tests/configs/scaling.toml",
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--set",
            "train.lr=1e9",
            "--set",
            "train.steps=20",
            "--set",
            "run.seeds=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("finding:") && stdout.contains("diverged at step"),
        "{stdout}"
    );
    let dir = std::fs::read_dir(out.join("scaling"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("train,") && l.contains(",loss,")),
        "no training rows kept"
    );
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(summary.contains("diverged at step"), "{summary}");
}

/// |a − b| ≤ tol·max(|a|, |b|).
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs())
}

#[test]
fn init_measurements_agree_on_flex_and_wgpu() {
    let Some(wgpu) = device_or_skip(wgpu_kind()) else {
        return;
    };
    let flex = Device::flex();
    for d_k in [8, 64, 256] {
        for scale in [ScoreScale::None, ScoreScale::SqrtDk] {
            let a = measure_init(d_k, scale, 16, 4, 3, &flex.clone().autodiff());
            let b = measure_init(d_k, scale, 16, 4, 3, &wgpu.clone().autodiff());
            for (name, x, y) in [
                ("Var(q·k)/d_k", a.qk_var_over_dk, b.qk_var_over_dk),
                ("Var(logits)", a.logit_var, b.logit_var),
                ("max weight", a.max_weight, b.max_weight),
                ("entropy", a.entropy, b.entropy),
                ("‖∂L/∂z‖", a.grad_logits, b.grad_logits),
                ("‖∂L/∂q‖", a.grad_q, b.grad_q),
            ] {
                assert!(
                    close(x, y, 1e-3),
                    "d_k={d_k} {scale}: {name} flex {x} vs wgpu {y}"
                );
            }
        }
    }
    for h in [1, 4] {
        for scale in [ScoreScale::SqrtDk, ScoreScale::SqrtDModel] {
            let a = measure_heads(64, h, scale, 16, 4, 3, &flex).unwrap();
            let b = measure_heads(64, h, scale, 16, 4, 3, &wgpu).unwrap();
            assert!(
                close(a.logit_std, b.logit_std, 1e-3),
                "h={h} {scale}: {a:?} vs {b:?}"
            );
            assert!(
                close(a.normalized_entropy, b.normalized_entropy, 1e-3),
                "h={h} {scale}"
            );
        }
    }
}

device_test!(a_saved_model_reloads_with_the_same_logits, |device| {
    use attention_lab::lab::checkpoint::{self, ModelSpec};
    let task = recall();
    let mut model = ModelConfig::new(16, 2);
    model.n_layers = 2;
    model.positional = attention_lab::PositionalKind::Sinusoidal;
    // And a model with room past its training length, a BOS and µP's rates, as
    // length_generalization, counting and mup_coord save them.
    let mut roomy = model.clone();
    roomy.positional = attention_lab::PositionalKind::Learned;
    roomy.max_len = Some(3 * task.seq_len());
    roomy.bos = true;
    roomy.scale = attention_lab::ScoreScale::Dk;
    roomy.mup_base_width = Some(8);
    let dir = scratch("checkpoint");
    let mut spec = ModelSpec::new(&model, &task, 5);
    for model in [roomy, model] {
        let run = train(
            &model,
            &task,
            &short(3e-3),
            5,
            &device.clone().autodiff(),
            &mut |_| {},
        )
        .unwrap();
        let trained = run.model.valid();
        spec = ModelSpec::new(&model, &task, 5);
        let (record, json) = checkpoint::to_bytes(&trained, &spec).unwrap();
        std::fs::write(dir.join("m.bpk"), record).unwrap();
        std::fs::write(dir.join("m.json"), json).unwrap();
        let (loaded, loaded_spec) = checkpoint::load(&dir.join("m"), &device).unwrap();
        assert_eq!(loaded_spec, spec);
        let tokens = task.held_out_batch(8, &mut attention_lab::util::rng::HostRng::new(6));
        let logits = |m: &attention_lab::lab::model::TinyTransformer| {
            values(m.forward(tokens.tokens(&device), task.n_out()).logits)
        };
        let (before, after) = (logits(&trained), logits(&loaded));
        assert!(
            max_abs_diff(&before, &after) <= 1e-6,
            "{}",
            max_abs_diff(&before, &after)
        );
        // A fresh model from the same seed differs: the parameters really came from the file.
        let fresh = model.init_for(&task, 5, &device).unwrap();
        assert!(max_abs_diff(&before, &logits(&fresh)) > 1e-3);
    }

    // A spec that does not match the parameters is a clean error naming the file.
    let mut wrong = spec.clone();
    wrong.model.d_model = 32;
    std::fs::write(dir.join("m.json"), serde_json::to_vec(&wrong).unwrap()).unwrap();
    let err = checkpoint::load(&dir.join("m"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m.bpk does not fit"), "{err}");
});

// Between recorded steps the loop reads nothing back from the device (so that a GPU never waits
// on the host); its NaN guard must still find the exact first bad step, keep the same records
// and return the same model as a loop that checks every step.
device_test!(sparse_records_change_nothing_but_what_is_read, |device| {
    let plain = device.clone();
    let device = device.autodiff();
    let task = recall();
    let batch = task.held_out_batch(8, &mut attention_lab::util::rng::HostRng::new(9));
    let logits = |run: &attention_lab::lab::train::TrainRun| -> Vec<u32> {
        values(
            run.model
                .valid()
                .forward(batch.tokens(&plain), task.n_out())
                .logits,
        )
        .iter()
        .map(|v| v.to_bits())
        .collect()
    };
    for lr in [3e-3, 1e9] {
        let every_step = train(
            &ModelConfig::new(16, 2),
            &task,
            &short(lr),
            0,
            &device,
            &mut |_| {},
        )
        .unwrap();
        // Sparse records with the device-side flag, and with every step read back instead.
        for (log_every, check_every_step) in [(4, false), (1000, false), (1000, true)] {
            let config = TrainConfig {
                log_every,
                check_every_step,
                ..short(lr)
            };
            let mut reported = Vec::new();
            let sparse = train(
                &ModelConfig::new(16, 2),
                &task,
                &config,
                0,
                &device,
                &mut |s| reported.push(s),
            )
            .unwrap();
            let bad = every_step.divergence.as_ref().map(|d| d.step);
            assert_eq!(
                sparse.divergence.as_ref().map(|d| (d.step, &d.quantity)),
                every_step
                    .divergence
                    .as_ref()
                    .map(|d| (d.step, &d.quantity)),
                "lr {lr}, log_every {log_every}"
            );
            let expected: Vec<_> = every_step
                .records
                .iter()
                .filter(|r| r.step % log_every == 0 || r.step + 1 == 25 || Some(r.step) == bad)
                .cloned()
                .collect();
            // Compared as their exact text, in which NaN equals NaN.
            let text =
                |r: &[attention_lab::lab::train::StepRecord]| serde_json::to_string(r).unwrap();
            assert_eq!(
                text(&sparse.records),
                text(&expected),
                "lr {lr}, log_every {log_every}"
            );
            assert_eq!(
                logits(&sparse),
                logits(&every_step),
                "lr {lr}, log_every {log_every}"
            );
            // Every step reported once, in order, at least up to the last one trained (steps
            // trained ahead of a bad one that is found later are reported, then undone).
            let last = bad.unwrap_or(24);
            assert_eq!(reported, (0..reported.len()).collect::<Vec<_>>(), "lr {lr}");
            if check_every_step {
                // Every step read back: nothing is trained ahead of a bad step.
                assert_eq!(reported.len(), last + 1, "lr {lr}: {reported:?}");
            }
            assert!(
                reported.len() > last && reported.len() <= 25,
                "{reported:?}"
            );
        }
        if lr == 1e9 {
            assert!(
                every_step
                    .divergence
                    .as_ref()
                    .is_some_and(|d| d.step % 4 != 0),
                "the test needs a divergence between recorded steps: {:?}",
                every_step.divergence
            );
        }
    }
});
