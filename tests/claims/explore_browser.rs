//! The explorer in a real browser: headless Chromium driven through WebDriver (Debian's
//! `chromium` and `chromium-driver`) against the real `explore` binary. Every check reads what
//! the page shows. Without a browser the test is skipped, unless
//! `ATTENTION_LAB_REQUIRE_BROWSER=1` (as in CI), which makes a missing browser a failure.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::common::scratch;
use crate::explore_api::Server;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process in its own process group, stopped with the browsers it started when
/// dropped (also when the test fails before closing its session).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromium outlives a killed chromedriver otherwise.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, or `None` (with the reason) when the browser is missing.
fn driver() -> Option<(Driver, String)> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        if std::env::var("ATTENTION_LAB_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("ATTENTION_LAB_REQUIRE_BROWSER=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((driver, format!("http://127.0.0.1:{port}")))
}

async fn browser(webdriver: &str, profile: &Path) -> Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1300,2400",
                format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// Waits until the page has finished the work started after `version` (its `data-version` has
/// moved past it) and returns the new version; panics on the page's error line.
async fn settle(c: &Client, version: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = c
            .execute(
                "return [document.body.dataset.state, Number(document.body.dataset.version), document.getElementById('status').textContent]",
                vec![],
            )
            .await
            .unwrap();
        let (state, v) = (now[0].as_str().unwrap_or(""), now[1].as_u64().unwrap_or(0));
        if v > version && state != "busy" {
            assert_eq!(state, "ready", "the page reports an error: {}", now[2]);
            return v;
        }
        assert!(Instant::now() < deadline, "the page did not settle: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn version(c: &Client) -> u64 {
    c.execute("return Number(document.body.dataset.version)", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

/// `[[i, j, weight, text], …]` of every heatmap cell shown.
async fn cells(c: &Client) -> Vec<(usize, usize, f64, String)> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#heatmap td.cell')].map(t => [Number(t.dataset.i), Number(t.dataset.j), Number(t.dataset.weight), t.textContent])",
            vec![],
        )
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_u64().unwrap() as usize,
                c[1].as_u64().unwrap() as usize,
                c[2].as_f64().unwrap(),
                c[3].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn number(c: &Client, script: &str) -> f64 {
    c.execute(script, vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(f64::NAN)
}

async fn shuffle(c: &Client) -> f64 {
    let v = version(c).await;
    c.find(Locator::Id("shuffle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    settle(c, v).await;
    number(
        c,
        "return Number(document.getElementById('max-delta').dataset.value)",
    )
    .await
}

/// chromedriver, an explorer with no run, a scratch folder named `test` and a runtime for the
/// browser; `None` without a browser.
fn free_explorer(test: &str) -> Option<(Driver, String, Server, PathBuf, tokio::runtime::Runtime)> {
    let (driver, webdriver) = driver()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some((
        driver,
        webdriver,
        Server::start(&[]),
        scratch(test),
        runtime,
    ))
}

/// Types `words` into the sentence box and waits until the page shows them, settled.
async fn type_sentence(c: &Client, words: &str) -> u64 {
    let before = version(c).await;
    let sentence = c.find(Locator::Id("sentence")).await.unwrap();
    sentence.clear().await.unwrap();
    sentence.send_keys(words).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .execute(
            "return state.result ? state.result.tokens.join(' ') : ''",
            vec![],
        )
        .await
        .unwrap()
        != json!(words)
    {
        assert!(
            Instant::now() < deadline,
            "the page never showed the typed sentence"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settle(c, before).await
}

#[test]
fn the_page_drives_the_block_in_a_real_browser() {
    let Some((_driver, webdriver, server, dir, runtime)) = free_explorer("explore-browser") else {
        return;
    };
    runtime.block_on(async {
        let c = browser(&webdriver, &dir.join("profile")).await;
        c.goto(&server.url).await.unwrap();
        settle(&c, 0).await;
        // The seed page's example first: three tokens, rows summing to 1.
        assert_eq!(cells(&c).await.len(), 9);

        // Type a sentence.
        let mut v = type_sentence(&c, "the cat sat on the mat").await;
        assert_eq!(cells(&c).await.len(), 36);

        // Click a token: its row, its neuron view and its entropy.
        c.find(Locator::Css("#heatmap button.token[data-i='2']")).await.unwrap().click().await.unwrap();
        v = settle(&c, v).await;
        let name = c.find(Locator::Id("query-name")).await.unwrap().text().await.unwrap();
        assert!(name.starts_with("sat"), "{name}");
        let neuron_rows = number(&c, "return document.querySelectorAll('#neuron tr').length").await;
        assert_eq!(neuron_rows, 8.0, "q row, header, 6 keys");

        // The causal mask: every weight above the diagonal shown is 0.
        c.find(Locator::Id("causal")).await.unwrap().click().await.unwrap();
        v = settle(&c, v).await;
        let shown = cells(&c).await;
        assert_eq!(shown.len(), 36);
        for (i, j, w, text) in &shown {
            if j > i {
                assert!(*w == 0.0 && text == "0.000", "weight ({i}, {j}) = {w} ({text}) under the mask");
            }
        }
        assert!(shown.iter().any(|(i, j, w, _)| j < i && *w > 0.0));
        // The README's picture is this page in this state, taken on request.
        if let Ok(path) = std::env::var("ATTENTION_LAB_SCREENSHOT") {
            c.set_window_size(1300, 1280).await.unwrap();
            let png = c.screenshot().await.unwrap();
            std::fs::write(&path, png).unwrap();
            eprintln!("screenshot for the README: {path}");
            c.set_window_size(1300, 2400).await.unwrap();
        }

        // Raising the temperature flattens the row: the shown entropy rises from the slider's
        // cold end (0.05) to its hot end (20).
        let slider = c.find(Locator::Id("temperature")).await.unwrap();
        slider.send_keys(&Key::Home.to_string()).await.unwrap();
        v = settle(&c, v).await;
        let shown_t = c.find(Locator::Id("temperature-value")).await.unwrap().text().await.unwrap();
        assert_eq!(shown_t, "0.05");
        let cold = number(&c, "return Number(document.getElementById('entropy').dataset.value)").await;
        slider.send_keys(&Key::End.to_string()).await.unwrap();
        v = settle(&c, v).await;
        let shown_t = c.find(Locator::Id("temperature-value")).await.unwrap().text().await.unwrap();
        assert_eq!(shown_t, "20.00");
        let hot = number(&c, "return Number(document.getElementById('entropy').dataset.value)").await;
        assert!(hot > cold + 0.05, "entropy {cold} → {hot} at temperature 20");

        // The column softmax: the row sums shown are no longer all 1.
        c.find(Locator::Id("axis")).await.unwrap().select_by_value("column").await.unwrap();
        v = settle(&c, v).await;
        let sums = c
            .execute("return [...document.querySelectorAll('#heatmap td.row-sum')].map(t => Number(t.dataset.sum))", vec![])
            .await
            .unwrap();
        let sums: Vec<f64> = sums.as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        assert_eq!(sums.len(), 6);
        assert!(sums.iter().any(|s| (s - 1.0).abs() > 0.05), "row sums {sums:?}");

        // Shuffle with no encoding and no mask: the outputs move with their tokens.
        c.find(Locator::Id("causal")).await.unwrap().click().await.unwrap();
        v = settle(&c, v).await;
        let plain = shuffle(&c).await;
        assert!(plain < 1e-5, "max |Δ| = {plain} without position or mask");
        // With a positional encoding they do not.
        c.find(Locator::Id("positional")).await.unwrap().select_by_value("sinusoidal").await.unwrap();
        settle(&c, v).await;
        let moved = shuffle(&c).await;
        assert!(moved > 1e-3, "max |Δ| = {moved} with sinusoidal positions");

        // The stepper walks the eight tables.
        let next = c.find(Locator::Id("step-next")).await.unwrap();
        for _ in 0..4 {
            next.click().await.unwrap();
        }
        let title = c.find(Locator::Id("step-title")).await.unwrap().text().await.unwrap();
        assert!(title.starts_with("5. Q·Kᵀ"), "{title}");
        let rows = number(&c, "return document.querySelectorAll('#step-tables tr').length").await;
        assert_eq!(rows, 7.0);

        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let path = dir.join("explorer.png");
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        c.close().await.unwrap();
    });
}

async fn text(c: &Client, script: &str) -> String {
    c.execute(script, vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Clicks the element at `css` (with shift held when `shift`) through WebDriver's actions, as
/// a user would, and waits for the page to settle.
async fn click(c: &Client, css: &str, shift: bool) {
    use fantoccini::actions::{
        Actions, InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
    };
    let v = version(c).await;
    let target = c.find(Locator::Css(css)).await.unwrap();
    if shift {
        // Shift held over the pointer's three ticks (move, down, up), then released.
        let pause = || KeyAction::Pause {
            duration: Duration::from_millis(0),
        };
        let keys = KeyActions::new("keys".into())
            .then(KeyAction::Down {
                value: Key::Shift.into(),
            })
            .then(pause())
            .then(pause())
            .then(pause())
            .then(KeyAction::Up {
                value: Key::Shift.into(),
            });
        let pointer = MouseActions::new("mouse".into())
            .then(PointerAction::Pause {
                duration: Duration::from_millis(0),
            })
            .then(PointerAction::MoveToElement {
                element: target,
                duration: None,
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        c.perform_actions(Actions::from(keys).and(pointer))
            .await
            .unwrap();
        c.release_actions().await.unwrap();
    } else {
        target.click().await.unwrap();
    }
    settle(c, v).await;
}

/// Explorer part 2 in a real browser: clicking column headers and the head view, a shift-click
/// selection summed by the server, the fused ↔ decomposed toggle, the walkthrough's W matrices
/// and counter, SVG and PNG exports, and a standalone page that shows the same numbers with no
/// server behind it.
#[test]
fn the_page_selects_compares_and_exports() {
    let Some((_driver, webdriver, server, dir, runtime)) = free_explorer("explore-browser-exports")
    else {
        return;
    };
    runtime.block_on(async {
        let c = browser(&webdriver, &dir.join("profile")).await;
        c.goto(&server.url).await.unwrap();
        settle(&c, 0).await;
        type_sentence(&c, "the cat sat on the mat").await;
        c.find(Locator::Id("causal")).await.unwrap().click().await.unwrap();
        settle(&c, version(&c).await.saturating_sub(1)).await;
        // Under the mask the first query sees one key: its entropy ceiling is ln 1 = 0.
        let ceiling = number(&c, "return Number(document.getElementById('entropy-max').dataset.value)").await;
        assert_eq!(ceiling, 0.0, "query 0's ceiling under the causal mask");

        // A column header chooses its token as the query.
        click(&c, "#heatmap th.key-token[data-j='3'] button", false).await;
        let name = text(&c, "return document.getElementById('query-name').textContent").await;
        assert!(name.starts_with("on (position 3"), "{name}");
        let ceiling = number(&c, "return Number(document.getElementById('entropy-max').dataset.value)").await;
        assert!((ceiling - 4f64.ln()).abs() < 1e-6, "query 3 sees 4 keys: {ceiling}");

        // Shift-click a row header: the server sums the two queries' weights.
        click(&c, "#heatmap tr th button.token[data-i='1']", true).await;
        let queries = text(&c, "return document.getElementById('selection').dataset.queries || ''").await;
        assert_eq!(queries, "3,1", "the selection after a shift-click");
        let summed: Vec<f64> = serde_json::from_str(&text(&c, "return document.getElementById('selection').dataset.summed").await).unwrap();
        let shown = cells(&c).await;
        for (j, s) in summed.iter().enumerate() {
            let row = |i: usize| shown.iter().find(|(a, b, _, _)| *a == i && *b == j).unwrap().2;
            assert!((s - row(3) - row(1)).abs() < 1e-6, "key {j}: {s}");
        }
        let lines = number(&c, "return new Set([...document.querySelectorAll('#headview line.hv-line')].map(l => l.dataset.i)).size").await;
        assert_eq!(lines, 2.0, "the head view draws both chosen queries");

        // A token in the head view chooses one query again.
        click(&c, "#headview text.hv-token.key-side[data-i='5']", false).await;
        let name = text(&c, "return document.getElementById('query-name').textContent").await;
        assert!(name.starts_with("mat (position 5"), "{name}");
        assert_eq!(text(&c, "return document.getElementById('selection').textContent").await, "");

        // The neuron view carries each score to its weight: numerator ÷ normaliser.
        let ratios = c
            .execute("return [...document.querySelectorAll('#neuron tr')].slice(2).map(r => [Number(r.querySelector('td.numerator').textContent) / Number(r.querySelector('td.normaliser').textContent), Number(r.querySelector('td.cell').dataset.weight)])", vec![])
            .await
            .unwrap();
        for pair in ratios.as_array().unwrap() {
            let (ratio, weight) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
            assert!((ratio - weight).abs() < 2e-4, "{ratio} vs {weight}");
        }

        // The toggle: both paths give the same weights and context, the gap printed.
        let fused_line = text(&c, "return document.getElementById('paths').textContent").await;
        assert!(fused_line.starts_with("Shown: the fused op's own weights."), "{fused_line}");
        let before = cells(&c).await;
        let v = version(&c).await;
        c.find(Locator::Id("path")).await.unwrap().select_by_value("decomposed").await.unwrap();
        settle(&c, v).await;
        let line = text(&c, "return document.getElementById('paths').textContent").await;
        assert!(line.starts_with("Shown: the decomposed steps."), "{line}");
        let gap = number(&c, "return Number(document.getElementById('paths').dataset.weights)").await;
        assert!(gap < 1e-5, "fused vs decomposed weights differ by {gap}");
        for ((_, _, a, _), (_, _, b, _)) in before.iter().zip(&cells(&c).await) {
            assert!((a - b).abs() < 1e-5);
        }

        // The walkthrough: a counter, and W_Q beside X and Q at step 2.
        c.find(Locator::Id("step-next")).await.unwrap().click().await.unwrap();
        assert_eq!(text(&c, "return document.getElementById('step-count').textContent").await, "2 / 8");
        let tables = number(&c, "return document.querySelectorAll('#step-tables table').length").await;
        assert_eq!(tables, 3.0, "X, W_Q and Q");
        let caption = text(&c, "return document.querySelectorAll('#step-tables .step-part p')[1].textContent").await;
        assert!(caption.starts_with("W_Q, head 0"), "{caption}");

        // SVG export: a document that parses, one cell per weight, the weights on screen.
        c.find(Locator::Id("export-svg")).await.unwrap().click().await.unwrap();
        let parsed = c
            .execute(
                "const svg = new DOMParser().parseFromString(document.body.dataset.lastExport, 'image/svg+xml'); \
                 return [svg.getElementsByTagName('parsererror').length, svg.documentElement.nodeName, \
                 [...svg.querySelectorAll('rect.weight')].map(r => Number(r.getAttribute('data-weight'))), svg.querySelectorAll('rect.legend').length]",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(parsed[0], 0, "the SVG does not parse");
        assert_eq!(parsed[1], "svg");
        let exported: Vec<f64> = parsed[2].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).collect();
        let on_screen: Vec<f64> = cells(&c).await.iter().map(|c| c.2).collect();
        assert_eq!(exported, on_screen);
        assert_eq!(parsed[3], 11, "the legend's colour steps");
        // PNG export: drawn from that SVG.
        let v = version(&c).await;
        c.find(Locator::Id("export-png")).await.unwrap().click().await.unwrap();
        settle(&c, v).await;
        let png = text(&c, "return document.body.dataset.lastExport.slice(0, 22)").await;
        assert_eq!(png, "data:image/png;base64,");

        // A standalone page: saved, then opened from disk with no server behind it.
        click(&c, "#heatmap tr th button.token[data-i='2']", false).await;
        let live = cells(&c).await;
        let live_neuron = text(&c, "return document.getElementById('neuron').textContent").await;
        let v = version(&c).await;
        c.find(Locator::Id("export-html")).await.unwrap().click().await.unwrap();
        settle(&c, v).await;
        let html = text(&c, "return document.body.dataset.lastExport").await;
        assert!(html.contains("window.SNAPSHOT = "), "{}", &html[..html.len().min(300)]);
        let file = dir.join("snapshot.html");
        std::fs::write(&file, &html).unwrap();
        drop(server);
        c.goto(&format!("file://{}", file.display())).await.unwrap();
        settle(&c, 0).await;
        assert_eq!(cells(&c).await, live, "the snapshot shows other weights than the live page");
        assert_eq!(text(&c, "return document.getElementById('neuron').textContent").await, live_neuron);
        let banner = number(&c, "return document.getElementById('snapshot').hidden ? 0 : 1").await;
        assert_eq!(banner, 1.0);
        let disabled = number(&c, "return document.getElementById('causal').disabled ? 1 : 0").await;
        assert_eq!(disabled, 1.0, "a snapshot's knobs cannot change");
        // Another query's neuron view comes from the snapshot too.
        click(&c, "#heatmap tr th button.token[data-i='4']", false).await;
        let name = text(&c, "return document.getElementById('query-name').textContent").await;
        assert!(name.starts_with("the (position 4"), "{name}");
        let rows = number(&c, "return document.querySelectorAll('#neuron tr').length").await;
        assert_eq!(rows, 8.0);
        let other = text(&c, "return document.getElementById('neuron').textContent").await;
        assert_ne!(other, live_neuron, "query 4's neuron view is query 2's");
        // The shuffle saved with it: the tokens' rows put back in order, the seed named.
        click(&c, "#shuffle", false).await;
        let aligned = number(&c, "return document.querySelectorAll('#shuffle-aligned tr').length").await;
        assert_eq!(aligned, 7.0, "header and six rows");
        let title = text(&c, "return document.querySelector('#shuffle-compare div:nth-child(2) h3').textContent").await;
        assert!(title.contains("shuffle seed 1"), "{title}");
        c.close().await.unwrap();
    });
}

/// Runs `experiment`'s reduced config into a scratch folder named `test` and serves its models:
/// (the folder, the explorer on the run).
fn serve_a_run(experiment: &str, test: &str) -> (std::path::PathBuf, Server) {
    let out = scratch(test);
    let config = format!("tests/configs/{experiment}.toml");
    let result = crate::common::run(
        experiment,
        &["--config", &config, "--out", out.to_str().unwrap()],
    );
    assert!(
        result.status.success(),
        "{}",
        crate::common::stderr(&result)
    );
    let dir = crate::common::run_dir(&out, experiment);
    let server = Server::start(&["--run", dir.to_str().unwrap()]);
    (out, server)
}

/// A reduced run of `experiment` served, and a browser on its page; `None` without a driver.
struct OpenRun {
    _driver: Driver,
    _server: Server,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

fn open_a_run(experiment: &str, test: &str) -> Option<OpenRun> {
    let (driver, webdriver) = driver()?;
    let (out, server) = serve_a_run(experiment, test);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let c = browser(&webdriver, &out.join("profile")).await;
        c.goto(&server.url).await.unwrap();
        c
    });
    Some(OpenRun {
        _driver: driver,
        _server: server,
        runtime,
        client,
    })
}

/// Trained-model mode in the browser: a run's saved models on examples of their task, the answer
/// position highlighted, a new example on request.
#[test]
fn the_page_shows_a_trained_model_on_its_task() {
    let Some(open) = open_a_run("scaling", "explore-browser-run") else {
        return;
    };
    let c = open.client.clone();
    open.runtime.block_on(async {
        // The page computes the free block first, then the first model's example.
        let deadline = Instant::now() + Duration::from_secs(30);
        let shown = |c: &Client| {
            let c = c.clone();
            async move {
                c.execute(
                    "return [...document.querySelectorAll('#trained-view .tokens-line span')].map(s => [s.textContent, s.className])",
                    vec![],
                )
                .await
                .unwrap()
            }
        };
        let first = loop {
            let tokens = shown(&c).await;
            if tokens.as_array().is_some_and(|t| !t.is_empty()) {
                break tokens;
            }
            assert!(Instant::now() < deadline, "no trained example shown");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let tokens = first.as_array().unwrap();
        // Recall: six key=value pairs, then the query, which is where the answer is read.
        assert_eq!(tokens.len(), 7, "{first}");
        assert!(tokens[6][0].as_str().unwrap().ends_with('?'), "{first}");
        assert_eq!(tokens[6][1], "answer", "{first}");
        assert!(tokens[..6].iter().all(|t| t[1] == ""), "{first}");
        let highlighted = number(&c, "return document.querySelectorAll('#trained-view tr.answer').length").await;
        assert_eq!(highlighted, 1.0, "one layer × one head, one answer row");
        let verdict = c.find(Locator::Css("#trained-view p:nth-of-type(2)")).await.unwrap().text().await.unwrap();
        assert!(verdict.starts_with("Answer: expected v"), "{verdict}");
        // Another seed, another example.
        let seed = c.find(Locator::Id("example-seed")).await.unwrap();
        seed.clear().await.unwrap();
        seed.send_keys("7").await.unwrap();
        let v = version(&c).await;
        c.find(Locator::Id("example")).await.unwrap().click().await.unwrap();
        settle(&c, v).await;
        assert_ne!(shown(&c).await, first, "seed 7 drew the same example as seed 0");
        c.close().await.unwrap();
    });
}

/// The sinks in trained mode: position 0's column outlined and each head captioned with its mean
/// weight there, the unspent weight beside each query of the off-by-one model and the gate beside
/// each query of the gated one.
#[test]
fn the_trained_mode_shows_the_sink_the_unspent_weight_and_the_gates() {
    let Some(open) = open_a_run("attention_sinks", "explore-browser-sinks") else {
        return;
    };
    let c = open.client.clone();
    open.runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while number(&c, "return document.querySelectorAll('#trained-view p.sink').length").await
            < 1.0
        {
            assert!(Instant::now() < deadline, "no trained example shown");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Two layers of one head, 16 tokens: every row's first cell is outlined.
        for model in ["sinks-gated-seed0", "sinks-off-by-one-seed0", "sinks-standard-seed0"] {
            let v = version(&c).await;
            c.execute(
                &format!("const m = document.getElementById('model'); m.value = '{model}'; m.dispatchEvent(new Event('change'));"),
                vec![],
            )
            .await
            .unwrap();
            settle(&c, v).await;
            let captions = number(&c, "return document.querySelectorAll('#trained-view p.sink').length").await;
            assert_eq!(captions, 2.0, "{model}: one caption per head");
            let outlined = number(&c, "return document.querySelectorAll('#trained-view td.first-key').length").await;
            assert_eq!(outlined, 2.0 * 16.0, "{model}: position 0 of every row, in both layers");
            let extra = c
                .execute(
                    "return [...document.querySelectorAll('#trained-view th.extra')].map(t => t.textContent)",
                    vec![],
                )
                .await
                .unwrap();
            let names: Vec<&str> = extra.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            let want: &[&str] = match model {
                "sinks-gated-seed0" => &["gate", "gate"],
                "sinks-off-by-one-seed0" => &["unspent", "unspent"],
                _ => &[],
            };
            assert_eq!(names, want, "{model}: the columns beside the queries");
            // The model view: one small map per layer and head, every position by default.
            let maps = number(&c, "return document.querySelectorAll('#model-grid svg.mini').length").await;
            assert_eq!(maps, 2.0, "{model}: two layers of one head");
            let cells = number(&c, "return document.querySelectorAll('#model-grid svg.mini rect').length").await;
            assert_eq!(cells, 2.0 * 16.0 * 16.0, "{model}");
            // The rollout the server computed: every row sums to 1.
            let sums = c
                .execute("return state.example.rollout.map(r => r.reduce((a, b) => a + b, 0))", vec![])
                .await
                .unwrap();
            assert_eq!(sums.as_array().unwrap().len(), 16);
            for s in sums.as_array().unwrap() {
                assert!((s.as_f64().unwrap() - 1.0).abs() < 1e-6, "{model}: rollout row sums {sums}");
            }
            let shown = number(&c, "return document.querySelectorAll('#rollout-table tr').length").await;
            assert_eq!(shown, 17.0, "{model}: header and 16 rows");
        }
        // The filter: positions 2 … 4 only.
        for (id, value) in [("grid-from", "2"), ("grid-to", "4")] {
            let input = c.find(Locator::Id(id)).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
        let cells = number(&c, "return document.querySelectorAll('#model-grid svg.mini rect').length").await;
        assert_eq!(cells, 2.0 * 9.0, "two maps of 3 × 3 positions");
        c.close().await.unwrap();
    });
}
