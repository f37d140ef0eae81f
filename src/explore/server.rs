//! The explorer's HTTP server: one page and a JSON API, on axum over tokio. It serves only what
//! it builds (no file paths come from the client), computes on blocking threads so that a slow
//! backend does not stall the connections, and turns a panic into a 500 with the reason.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burn::prelude::Device;
use serde_json::{Value, json};

use crate::explore::api::{self, BadRequest};
use crate::explore::page;
use crate::explore::trained::Trained;
use crate::lab::trace;
use crate::util::device::BackendKind;
use crate::util::guard;

/// What the server computes with.
pub struct Explorer {
    pub device: Device,
    pub backend: BackendKind,
    /// Seeds the word embeddings and projections when a request gives no `options.seed`.
    pub seed: u64,
    /// The run folder's models (`--run`); behind a lock because a module is not `Sync`.
    pub trained: Option<Mutex<Trained>>,
}

impl Explorer {
    pub fn new(device: Device, backend: BackendKind, seed: u64, trained: Option<Trained>) -> Self {
        Self {
            device,
            backend,
            seed,
            trained: trained.map(Mutex::new),
        }
    }

    /// `GET /api/info`: the backend, the default seed, the seed page's example and the limits,
    /// and the trained models when there are any.
    pub fn info(&self) -> Value {
        let example = trace::seed_page_example();
        let trained = self
            .trained
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).summary());
        json!({
            "backend": self.backend.name(),
            "seed": self.seed,
            "example": {
                "tokens": example.tokens,
                "x": example.x.to_rows(),
            },
            "limits": {
                "tokens": api::MAX_TOKENS,
                "width": api::MAX_WIDTH,
                "body_bytes": api::MAX_BODY,
            },
            "default_d_model": api::DEFAULT_D_MODEL,
            "trained": trained,
        })
    }
}

/// The routes: `/`, `GET /api/info`, `POST /api/attention`, `POST /api/shuffle`,
/// `POST /api/model`, `POST /api/export` (a standalone HTML page); anything else is a JSON 404.
pub fn router(explorer: Arc<Explorer>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/info", get(info))
        .route("/api/attention", post(attention))
        .route("/api/shuffle", post(shuffle))
        .route("/api/model", post(model))
        .route("/api/export", post(export))
        .fallback(not_found)
        .with_state(explorer)
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, lets requests in
/// flight finish, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    explorer: Explorer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(Arc::new(explorer)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the server on `listener` on its own runtime until Ctrl-C or SIGTERM. Connections still
/// open 3 s after the signal (a browser's kept-alive ones) are dropped.
pub fn serve_until_signal(
    listener: std::net::TcpListener,
    explorer: Explorer,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            stop_signal().await;
            let _ = stop.send(true);
        };
        let mut grace = stopped.clone();
        tokio::select! {
            served = serve(listener, explorer, signal) => served,
            _ = async {
                let _ = grace.wait_for(|s| *s).await;
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            } => Ok(()),
        }
    })
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn index(State(explorer): State<Arc<Explorer>>) -> Html<String> {
    Html(page::render(explorer.backend.name()).into_string())
}

async fn info(State(explorer): State<Arc<Explorer>>) -> Response {
    (StatusCode::OK, axum::Json(explorer.info())).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found: this server serves /, GET /api/info and POST /api/attention, /api/shuffle, /api/model, /api/export",
    )
}

/// Reads the body (at most 1 MiB), then runs `compute` on a blocking thread, panics caught,
/// and answers its JSON.
async fn compute(
    explorer: Arc<Explorer>,
    body: Body,
    compute: fn(&Explorer, &[u8]) -> Result<Value, BadRequest>,
) -> Response {
    computed(explorer, body, compute, |value| {
        ([(header::CACHE_CONTROL, "no-store")], axum::Json(value)).into_response()
    })
    .await
}

/// [`compute`], its answer turned into a response by `respond`.
async fn computed<T: Send + 'static>(
    explorer: Arc<Explorer>,
    body: Body,
    compute: fn(&Explorer, &[u8]) -> Result<T, BadRequest>,
    respond: fn(T) -> Response,
) -> Response {
    let bytes = match to_bytes(body, api::MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: over the {}-byte (1 MiB) limit, or unreadable ({e})",
                    api::MAX_BODY
                ),
            );
        }
    };
    let answer =
        tokio::task::spawn_blocking(move || guard::catch(|| compute(&explorer, &bytes))).await;
    match answer {
        Ok(Ok(Ok(value))) => respond(value),
        Ok(Ok(Err(BadRequest(message)))) => error(StatusCode::BAD_REQUEST, message),
        Ok(Err(panic)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the block failed on this input ({panic})"),
        ),
        Err(join) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the computation stopped ({join})"),
        ),
    }
}

async fn attention(State(explorer): State<Arc<Explorer>>, body: Body) -> Response {
    compute(explorer, body, |e, bytes| {
        api::attention(&api::parse(bytes, e.seed)?, &e.device)
    })
    .await
}

async fn shuffle(State(explorer): State<Arc<Explorer>>, body: Body) -> Response {
    compute(explorer, body, |e, bytes| {
        api::shuffle(&api::parse(bytes, e.seed)?, &e.device)
    })
    .await
}

async fn model(State(explorer): State<Arc<Explorer>>, body: Body) -> Response {
    compute(explorer, body, model_example).await
}

/// `POST /api/export`: the standalone page of [`api::snapshot`], as a file to save.
async fn export(State(explorer): State<Arc<Explorer>>, body: Body) -> Response {
    computed(
        explorer,
        body,
        |e, bytes| {
            // Before the lock: info() takes it too.
            let info = e.info();
            let trained = e
                .trained
                .as_ref()
                .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()));
            let snapshot = api::snapshot(bytes, e.seed, info, trained.as_deref(), &e.device)?;
            Ok(page::render_snapshot(e.backend.name(), &snapshot).into_string())
        },
        |html| {
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"attention-explorer.html\"",
                    ),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response()
        },
    )
    .await
}

/// `POST /api/model`: [`api::model`] on the run's models, when `--run` gave some.
fn model_example(explorer: &Explorer, bytes: &[u8]) -> Result<Value, BadRequest> {
    let Some(trained) = &explorer.trained else {
        return Err(BadRequest(
            "model: no trained models here; start explore with --run results/<experiment>/<run-id>"
                .into(),
        ));
    };
    let trained = trained.lock().unwrap_or_else(|e| e.into_inner());
    api::model(bytes, &trained, &explorer.device)
}
