//! The explorer's JSON API, over HTTP against the real `explore` binary on a free port: the
//! same numbers as `trace --json`, a 400 naming the field for each bad request, and a server that
//! keeps serving afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::common::{run, run_dir, scratch, stderr};

/// An `explore` server on a free loopback port, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_explore"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the explore binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("explore exited before printing its URL")
                .unwrap();
            if let Some(at) = line.find("http://") {
                break line[at..].split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `(status, body as JSON)` of a request; `body` None means GET.
pub fn call(url: &str, body: Option<Vec<u8>>) -> (u16, Value) {
    runtime().block_on(async {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let request = hyper::Request::builder()
            .method(if body.is_some() { "POST" } else { "GET" })
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = client.request(request).await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    })
}

fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    call(
        &format!("{}{path}", server.url.trim_end_matches('/')),
        Some(body.to_string().into_bytes()),
    )
}

/// The seed example through the API equals `trace --json`, with default options and with
/// several knobs turned (two heads, the mask, a temperature, rotary, a fixed scale).
#[test]
fn the_api_answers_what_trace_writes() {
    let server = Server::start(&[]);
    let (status, info) = call(&format!("{}api/info", server.url), None);
    assert_eq!(status, 200, "{info}");
    let example = &info["example"];
    let cases: [(&[&str], Value); 3] = [
        (&[], json!({})),
        (
            &[
                "--causal",
                "--heads",
                "2",
                "--temperature",
                "2.5",
                "--positional",
                "rotary",
            ],
            json!({"causal": true, "n_heads": 2, "temperature": 2.5, "positional": "rotary"}),
        ),
        (
            &[
                "--scale",
                "3",
                "--softmax-axis",
                "column",
                "--no-projections",
                "--heads",
                "2",
            ],
            json!({"scale": 3, "softmax_axis": "column", "projections": false, "n_heads": 2}),
        ),
    ];
    for (args, options) in cases {
        let path = scratch("explore-trace").join("trace.json");
        let mut all = vec!["--json", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run("trace", &all);
        assert!(out.status.success(), "{}", stderr(&out));
        let traced: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (status, answer) = post(
            &server,
            "/api/attention",
            &json!({"tokens": example["tokens"], "x": example["x"], "options": options}),
        );
        assert_eq!(status, 200, "{args:?}: {answer}");
        for key in [
            "x", "w_q", "w_k", "w_v", "output", "d_k", "d_v", "scale", "n_heads",
        ] {
            let d = max_diff(&traced[key], &answer[key]);
            assert!(d <= 1e-6, "{args:?}: {key} differs by {d}");
        }
        let heads = traced["heads"].as_array().unwrap();
        assert_eq!(heads.len(), answer["heads"].as_array().unwrap().len());
        for (h, head) in heads.iter().enumerate() {
            for key in [
                "q", "k", "v", "scores", "scaled", "weights", "output", "row_sums", "entropy",
            ] {
                let d = max_diff(&head[key], &answer["heads"][h][key]);
                assert!(d <= 1e-6, "{args:?}: head {h} {key} differs by {d}");
            }
        }
    }
}

#[test]
fn bad_requests_get_400_naming_the_field_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let words = |n: usize| json!((0..n).map(|i| format!("w{i}")).collect::<Vec<_>>());
    let cases = [
        (json!({"x": [[1, 2, 3], [4, 5]]}), "x is ragged"),
        (
            json!({"x": [[1, 2]], "w_q": [[1], [2], [3]], "w_k": [[1], [2]], "w_v": [[1], [2]]}),
            "w_q has 3 rows",
        ),
        (
            json!({"tokens": ["a"], "options": {"colour": "red"}}),
            "options.colour",
        ),
        (
            json!({"tokens": ["a"], "options": {"temperature": 0}}),
            "options.temperature",
        ),
        (
            json!({"tokens": ["a"], "options": {"temperature": -1.5}}),
            "options.temperature",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"d_model": 6, "n_heads": 4}}),
            "d_model = 6 is not divisible by n_heads = 4",
        ),
        (json!({"tokens": words(65)}), "tokens: 65 tokens"),
        (
            json!({"tokens": ["a"], "options": {"softmax_axis": "diagonal"}}),
            "options.softmax_axis",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"query": 2}}),
            "options.query",
        ),
        (
            json!({"tokens": ["a"], "options": {"ssmax": "yes"}}),
            "options.ssmax",
        ),
        (
            json!({"tokens": ["a"], "options": {"softmax": "softpick"}}),
            "options.softmax",
        ),
        (
            json!({"tokens": ["a"], "options": {"gate": true}}),
            "options.gate",
        ),
        (
            json!({"tokens": ["a"], "options": {"kernel": "cosine"}}),
            "options.kernel",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"softmax": "off-by-one", "softmax_axis": "whole"}}),
            "the off-by-one softmax",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"ssmax": true, "softmax_axis": "column"}}),
            "softmax_axis = \"row\"",
        ),
        // A knob set at the top level is refused, saying where it goes.
        (
            json!({"tokens": ["a", "b"], "temperature": -1}),
            "temperature: -1 at the top level is not applied there",
        ),
        (
            json!({"tokens": ["a", "b"], "causal": true}),
            "\"options\": {\"causal\": true}",
        ),
        (
            json!({"tokens": ["a", "b"], "seed": 4}),
            "seed: a knob, set under options",
        ),
        (
            json!({"tokens": ["a"], "options": {"path": "tiled"}}),
            "options.path",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"queries": [0, 2]}}),
            "options.queries",
        ),
        (
            json!({"tokens": ["a", "b"], "options": {"shuffle_seed": -1}}),
            "options.shuffle_seed",
        ),
    ];
    for (body, field) in &cases {
        let (status, answer) = post(&server, "/api/attention", body);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            error.contains(field),
            "{body}: expected {field:?} in {error}"
        );
    }
    // A body over 1 MiB, and one that is not JSON.
    let big = format!(r#"{{"tokens": ["{}"]}}"#, "a".repeat(1 << 20));
    let (status, answer) = call(
        &format!("{}api/attention", server.url),
        Some(big.into_bytes()),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("body:"),
        "{answer}"
    );
    let (status, answer) = call(
        &format!("{}api/shuffle", server.url),
        Some(b"{\"tokens\": [".to_vec()),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("body:"),
        "{answer}"
    );
    // No file is served from a client's path, and no model is there without --run.
    for path in [
        "Cargo.toml",
        "../Cargo.toml",
        "src/lib.rs",
        "%2e%2e/Cargo.toml",
    ] {
        let (status, _) = call(&format!("{}{path}", server.url), None);
        assert_eq!(status, 404, "{path}");
    }
    let (status, answer) = post(&server, "/api/model", &json!({"model": "x"}));
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("--run"),
        "{answer}"
    );
    // Still serving, and still right.
    let (status, answer) = post(
        &server,
        "/api/attention",
        &json!({"tokens": ["still", "here"]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tokens"], json!(["still", "here"]));
    let (status, page) = call(&server.url, None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("Attention explorer"));
}

/// `POST /api/export`: a standalone page holding the view's answers, computed by the block: the
/// same weights as `/api/attention`, every query's neuron view, the next shuffle.
#[test]
fn the_export_is_a_page_with_the_answers_inside() {
    let server = Server::start(&[]);
    let request =
        json!({"tokens": ["a", "b", "c"], "options": {"causal": true, "n_heads": 2, "query": 1}});
    let (status, live) = post(&server, "/api/attention", &request);
    assert_eq!(status, 200, "{live}");
    let (status, page) = post(
        &server,
        "/api/export",
        &json!({"request": request, "controls": {"sentence": "a b c"}, "shuffle_seed": 3}),
    );
    assert_eq!(status, 200, "{page}");
    let page = page.as_str().unwrap();
    let start = page.find("window.SNAPSHOT = ").unwrap() + "window.SNAPSHOT = ".len();
    let end = start + page[start..].find(";</script>").unwrap();
    let snapshot: Value = serde_json::from_str(&page[start..end]).unwrap();
    assert_eq!(snapshot["attention"]["heads"], live["heads"]);
    assert_eq!(
        snapshot["attention"]["neurons"].as_array().unwrap().len(),
        3
    );
    assert_eq!(snapshot["attention"]["neurons"][1], live["neuron"]);
    assert_eq!(snapshot["shuffle"]["shuffle_seed"], 3);
    assert!(snapshot["provenance"]["commit"].is_string());
    for (body, field) in [
        (
            json!({"request": request, "controls": {"x": [1]}}),
            "controls:",
        ),
        (json!({"controls": {}}), "request:"),
        (
            json!({"request": request, "colour": 1}),
            "colour: unknown field",
        ),
        (
            json!({"request": request, "shuffle_seed": "3"}),
            "shuffle_seed:",
        ),
        (
            json!({"request": request, "model": "m"}),
            "model: no trained models here",
        ),
        (
            json!({"request": {"tokens": ["a"], "causal": true}}),
            "causal: true at the top level",
        ),
    ] {
        let (status, answer) = post(&server, "/api/export", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(field),
            "{body}: expected {field:?}, got {error}"
        );
    }
}

#[test]
fn shuffling_is_equivariant_only_without_position_and_mask() {
    let server = Server::start(&["--seed", "5"]);
    let body = |options: Value| json!({"tokens": "the cat sat on the mat".split(' ').collect::<Vec<_>>(), "options": options});
    let gap = |options: Value| {
        let (status, answer) = post(&server, "/api/shuffle", &body(options));
        assert_eq!(status, 200, "{answer}");
        (
            answer["max_delta"].as_f64().unwrap(),
            answer["equivariant"].as_bool().unwrap(),
        )
    };
    let (plain, yes) = gap(json!({"d_model": 8}));
    assert!(plain < 1e-5 && yes, "{plain}");
    for options in [
        json!({"d_model": 8, "positional": "sinusoidal"}),
        json!({"d_model": 8, "causal": true}),
        json!({"d_model": 8, "positional": "rotary", "n_heads": 2}),
        json!({"d_model": 8, "positional": "alibi", "n_heads": 2}),
    ] {
        let (moved, yes) = gap(options.clone());
        assert!(moved > 1e-3 && !yes, "{options}: {moved}");
    }
}

/// A run that trained models, served with --run: examples of its task with the answer position
/// and every layer's attention.
#[test]
fn trained_models_of_a_run_are_shown_on_their_task() {
    let out = scratch("explore-run");
    let result = run(
        "no_projections",
        &[
            "--config",
            "tests/configs/no_projections.toml",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let dir = run_dir(&out, "no_projections");
    let server = Server::start(&["--run", dir.to_str().unwrap()]);
    let (status, info) = call(&format!("{}api/info", server.url), None);
    assert_eq!(status, 200);
    let models = info["trained"]["models"].as_array().unwrap();
    assert!(!models.is_empty(), "{info}");
    let name = models[0]["name"].as_str().unwrap();
    let (status, example) = post(&server, "/api/model", &json!({"model": name, "seed": 3}));
    assert_eq!(status, 200, "{example}");
    let n = example["tokens"].as_array().unwrap().len();
    let layers = example["layers"].as_array().unwrap();
    assert_eq!(layers.len() as u64, models[0]["n_layers"].as_u64().unwrap());
    for head in layers[0].as_array().unwrap() {
        let rows = head.as_array().unwrap();
        assert_eq!(rows.len(), n);
        for row in rows {
            let sum: f64 = row
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_f64().unwrap())
                .sum();
            assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        }
    }
    assert_eq!(
        example["answer_positions"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        n - 1
    );
    let (status, _) = post(&server, "/api/model", &json!({"model": "nope"}));
    assert_eq!(status, 400);
    // A folder without models is refused at start, with exit code 2.
    let status = Command::new(env!("CARGO_BIN_EXE_explore"))
        .args(["--port", "0", "--run", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
    assert!(
        stderr(&status).contains("has no models/ folder"),
        "{}",
        stderr(&status)
    );
}

/// `--backend` chooses where the page's numbers are computed: every backend here gives the
/// same answer as flex.
#[test]
fn every_backend_serves_the_same_numbers() {
    let body = json!({"tokens": ["the", "cat", "sat", "on", "the", "mat"],
        "options": {"d_model": 8, "n_heads": 2, "causal": true, "positional": "rotary", "query": 1}});
    let mut answers = Vec::new();
    for (kind, _) in crate::common::available_devices() {
        let server = Server::start(&["--backend", kind.name()]);
        let (status, info) = call(&format!("{}api/info", server.url), None);
        assert_eq!((status, info["backend"].as_str()), (200, Some(kind.name())));
        let (status, answer) = post(&server, "/api/attention", &body);
        assert_eq!(status, 200, "{kind}: {answer}");
        answers.push((kind, answer));
    }
    let (_, flex) = &answers[0];
    for (kind, answer) in &answers[1..] {
        for key in ["heads", "output", "neuron"] {
            let d = max_diff(&flex[key], &answer[key]);
            assert!(d <= 1e-5, "{kind}: {key} differs from flex by {d}");
        }
    }
}

/// max |a − b| over two JSON values of one shape: numbers compared, objects key by key, arrays
/// item by item; anything else must be equal.
fn max_diff(a: &Value, b: &Value) -> f64 {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len());
            a.iter()
                .map(|(k, v)| max_diff(v, &b[k]))
                .fold(0.0, f64::max)
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(x, y)| max_diff(x, y))
                .fold(0.0, f64::max)
        }
        (Value::Number(_), Value::Number(_)) => (a.as_f64().unwrap() - b.as_f64().unwrap()).abs(),
        (a, b) => {
            assert_eq!(a, b);
            0.0
        }
    }
}
