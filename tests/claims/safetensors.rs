//! Trained models leave Rust: `export_models` writes a run's checkpoints as safetensors, and a
//! reader that knows only the format (8 bytes of header length, a JSON header, raw bytes) gets
//! every parameter the model holds, bit for bit, with the spec, seed and commit in the metadata.
//! The reader is run twice: written out here in a few lines, and as `scripts/read_safetensors.py`
//! with numpy, as a researcher would. Without numpy the Python half is skipped, unless
//! `ATTENTION_LAB_REQUIRE_NUMPY=1` (as in CI), which makes it a failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use attention_lab::lab::checkpoint::{self, ModelSpec};
use attention_lab::lab::tasks::Task;
use attention_lab::util::rng::HostRng;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde_json::Value;

use crate::common::{run, run_dir, scratch, stderr};

/// A file's tensors: name → (shape, values).
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// `(metadata, tensors)` of a safetensors file, read by the format's definition.
fn read_plainly(path: &Path) -> (BTreeMap<String, String>, Tensors) {
    let blob = std::fs::read(path).unwrap();
    let length = u64::from_le_bytes(blob[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&blob[8..8 + length]).unwrap();
    let data = &blob[8 + length..];
    let mut metadata = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (name, entry) in header.as_object().unwrap() {
        if name == "__metadata__" {
            for (k, v) in entry.as_object().unwrap() {
                metadata.insert(k.clone(), v.as_str().unwrap().to_string());
            }
            continue;
        }
        assert_eq!(entry["dtype"], "F32", "{name}");
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let offsets: Vec<usize> = entry["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_u64().unwrap() as usize)
            .collect();
        let values: Vec<f32> = data[offsets[0]..offsets[1]]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        tensors.insert(name.clone(), (shape, values));
    }
    (metadata, tensors)
}

/// A Python 3 with numpy: `python3` on the path, or Debian's.
fn python_with_numpy() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn exported_models_read_the_same_in_any_reader_and_load_back() {
    let out = scratch("safetensors");
    let trained = run(
        "scaling",
        &[
            "--config",
            "tests/configs/scaling.toml",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(trained.status.success(), "{}", stderr(&trained));
    let dir = run_dir(&out, "scaling");
    let exported = run("export_models", &["--run", dir.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let stems = checkpoint::stems(&dir.join("models")).unwrap();
    assert!(!stems.is_empty());
    let device = Device::flex();
    let python = python_with_numpy();
    if python.is_none() {
        assert!(
            std::env::var("ATTENTION_LAB_REQUIRE_NUMPY").as_deref() != Ok("1"),
            "ATTENTION_LAB_REQUIRE_NUMPY=1 but no python3 with numpy (apt-get install python3-numpy)"
        );
        eprintln!(
            "skipped the numpy reader: no python3 with numpy (apt-get install python3-numpy)"
        );
    }
    for stem in &stems {
        let file = stem.with_extension("safetensors");
        let (model, spec) = checkpoint::load(stem, &device).unwrap();
        // The model's own parameters, by module path.
        let own: BTreeMap<String, Vec<f32>> = model
            .collect(None, None, false)
            .into_iter()
            .map(|t| {
                let bytes = t.to_bytes().unwrap();
                let values = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                (t.name.clone(), values)
            })
            .collect();
        assert!(
            own.keys().any(|k| k.contains("attention.query.weight")),
            "{:?}",
            own.keys()
        );

        let (metadata, tensors) = read_plainly(&file);
        assert_eq!(
            tensors.keys().collect::<Vec<_>>(),
            own.keys().collect::<Vec<_>>(),
            "{}",
            file.display()
        );
        for (name, (_, values)) in &tensors {
            assert_eq!(values, &own[name], "{name} in {}", file.display());
        }
        let stored: ModelSpec = serde_json::from_str(&metadata["attention_lab.spec"]).unwrap();
        assert_eq!(stored, spec);
        assert_eq!(metadata["attention_lab.seed"], spec.seed.to_string());
        assert_eq!(
            Some(&metadata["attention_lab.commit"]),
            spec.commit.as_ref()
        );
        assert!(metadata["attention_lab.exported_by"].starts_with("attention-lab "));

        if let Some(python) = python {
            let read = Command::new(python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/read_safetensors.py"
                ))
                .arg(&file)
                .output()
                .unwrap();
            assert!(read.status.success(), "{}", stderr(&read));
            let numpy: Value = serde_json::from_slice(&read.stdout).unwrap();
            assert_eq!(
                numpy["metadata"]["attention_lab.seed"],
                spec.seed.to_string()
            );
            let numpy_tensors = numpy["tensors"].as_object().unwrap();
            assert_eq!(numpy_tensors.len(), own.len());
            for (name, values) in &own {
                let got: Vec<f32> = numpy_tensors[name]["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert_eq!(&got, values, "{name} as numpy read it");
            }
        }

        // And back into a fresh model of the spec: the same predictions as the checkpoint.
        let mut fresh = spec
            .model
            .init(
                spec.vocab,
                spec.classes,
                spec.max_len,
                spec.seed + 1,
                &device,
            )
            .unwrap();
        let applied = fresh
            .load_from(&mut SafetensorsStore::from_file(&file))
            .unwrap();
        assert!(
            applied.is_success() && applied.missing.is_empty(),
            "{applied:?}"
        );
        let task = Task::new(spec.task.clone()).unwrap();
        let batch = task.held_out_batch(4, &mut HostRng::new(3));
        let logits = |m: &attention_lab::lab::model::TinyTransformer| {
            m.forward(batch.tokens(&device), batch.n_out)
                .logits
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        assert_eq!(logits(&fresh), logits(&model), "{}", file.display());
    }
}

#[test]
fn export_models_names_a_folder_without_models() {
    let empty = scratch("safetensors-empty");
    let result = run("export_models", &["--run", empty.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    let message = stderr(&result);
    assert!(
        message.contains(empty.to_str().unwrap()) && message.contains("no trained models"),
        "{message}"
    );
}
