//! The one place that names a backend: turns `--backend flex` into a Burn [`Device`].
//!
//! Burn 0.22 picks the backend at run time, so every other module takes a `&Device` and runs the
//! same code on all of them. A backend that is missing (not compiled in, or no wgpu adapter) is an
//! error with a remedy, never a panic.

use std::sync::{Mutex, OnceLock};

use burn::prelude::*;
use burn::tensor::DeviceKind;

use crate::util::cli::{UnknownName, named_enum};
use crate::util::guard;

/// The backends attention-lab can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend, the fastest CPU backend here. The default.
    #[default]
    Flex,
    /// The ndarray CPU backend (deprecated upstream, kept because users ask for it by name).
    Ndarray,
    /// wgpu on the best adapter wgpu can find (a GPU where there is one).
    Wgpu,
    /// wgpu on a CPU (software) adapter, e.g. Mesa's llvmpipe on a machine without a GPU.
    WgpuCpu,
    /// CUDA device 0; needs the crate's `cuda` cargo feature.
    Cuda,
    /// Device 0 of a Burn server at `$BURN_REMOTE_ADDRESS` (default `ws://127.0.0.1:3000`);
    /// needs the crate's `remote` cargo feature.
    Remote,
}

/// Why a backend could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    #[error(
        "backend '{asked}' is not compiled in: rebuild with `--features {feature}`, or use --backend flex"
    )]
    NotCompiled {
        asked: &'static str,
        feature: &'static str,
    },
    #[error("backend '{asked}' is unavailable: {missing}. {remedy}")]
    Unavailable {
        asked: &'static str,
        missing: String,
        remedy: &'static str,
    },
}

named_enum!(BackendKind, "backend", {
    Flex => "flex",
    Ndarray => "ndarray",
    Wgpu => "wgpu",
    WgpuCpu => "wgpu-cpu",
    Cuda => "cuda",
    Remote => "remote",
});

impl BackendKind {
    /// The inference device, after checking that the backend really runs here.
    pub fn device(self) -> Result<Device, BackendError> {
        let device = self.raw_device()?;
        probe(self, &device)?;
        Ok(device)
    }

    /// The same device with gradients recorded, for training.
    pub fn autodiff_device(self) -> Result<Device, BackendError> {
        Ok(self.device()?.autodiff())
    }

    fn raw_device(self) -> Result<Device, BackendError> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => Ok(Device::wgpu(DeviceKind::DefaultDevice)),
            BackendKind::WgpuCpu => Ok(Device::wgpu(DeviceKind::Cpu)),
            BackendKind::Cuda => cuda_device(),
            BackendKind::Remote => remote_device(),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device, BackendError> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device, BackendError> {
    Err(BackendError::NotCompiled {
        asked: "cuda",
        feature: "cuda",
    })
}

/// Where `--backend remote` connects.
pub fn remote_address() -> String {
    std::env::var("BURN_REMOTE_ADDRESS").unwrap_or_else(|_| "ws://127.0.0.1:3000".to_string())
}

/// The variable that holds the remote server's token, for `remote_server` and its clients alike.
/// An environment variable rather than a flag on the client, so that it stays out of `ps` and of
/// the shell history.
pub const REMOTE_TOKEN_VAR: &str = "ATTENTION_LAB_REMOTE_TOKEN";

/// The token in [`REMOTE_TOKEN_VAR`], if one is set and not empty.
pub fn remote_token() -> Option<String> {
    std::env::var(REMOTE_TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
}

#[cfg(feature = "remote")]
fn remote_device() -> Result<Device, BackendError> {
    remote_device_with(&remote_address(), remote_token().as_deref())
}

/// Device 0 of the Burn server at `address`, e.g. `ws://127.0.0.1:3000`, presenting the token in
/// [`REMOTE_TOKEN_VAR`] if one is set.
#[cfg(feature = "remote")]
pub fn remote_device_at(address: &str) -> Result<Device, BackendError> {
    remote_device_with(address, remote_token().as_deref())
}

/// Device 0 of the Burn server at `address`, presenting `token` (the server's
/// `TokenAuthorizer` checks it when the session opens).
#[cfg(feature = "remote")]
pub fn remote_device_with(address: &str, token: Option<&str>) -> Result<Device, BackendError> {
    use burn::tensor::remote::{ConnectError, RemoteHost};
    let mut host = RemoteHost::websocket(address);
    if let Some(token) = token {
        host = host.with_credential(token);
    }
    Device::remote_options(&host).init().map_err(|e| match e {
        ConnectError::Unauthorized => BackendError::Unavailable {
            asked: "remote",
            missing: format!(
                "the Burn server at {address} refused this client: {}",
                if token.is_some() {
                    "the token in ATTENTION_LAB_REMOTE_TOKEN is not the server's"
                } else {
                    "it requires a token, and ATTENTION_LAB_REMOTE_TOKEN is not set"
                }
            ),
            remedy: "Set ATTENTION_LAB_REMOTE_TOKEN to the token the server was started with.",
        },
        e => BackendError::Unavailable {
            asked: "remote",
            missing: format!("no Burn server answered at {address} ({e})"),
            remedy: "Start one there, set BURN_REMOTE_ADDRESS to where one runs, or use --backend flex.",
        },
    })
}

/// Whether a server may listen on `address` with or without a token: without one, every client
/// that reaches it gets a session, so only a loopback address (this machine alone) is allowed.
pub fn check_exposure(address: std::net::SocketAddr, token: Option<&str>) -> Result<(), String> {
    match token {
        Some("") => Err("the token is empty".into()),
        None if !address.ip().is_loopback() => Err(format!(
            "refusing to serve on {address} without a token: any machine that reaches it could \
             run work on this one; set {REMOTE_TOKEN_VAR} (or pass --token), or listen on \
             127.0.0.1 and reach it through an SSH tunnel"
        )),
        _ => Ok(()),
    }
}

/// Serves `kind`'s device to remote clients over WebSocket on `listener`; blocks while serving.
/// With a `token`, only clients presenting it get a session (Burn's `TokenAuthorizer`, checked on
/// every session a client opens); without one, every client does, which [`check_exposure`]
/// allows only on a loopback address.
#[cfg(feature = "remote-server")]
pub fn serve(
    kind: BackendKind,
    listener: std::net::TcpListener,
    token: Option<&str>,
) -> Result<(), String> {
    use burn::tensor::server::{RemoteServer, TokenAuthorizer, WebSocketTransport};
    check_exposure(listener.local_addr().map_err(|e| e.to_string())?, token)?;
    let server = RemoteServer::new([kind.device().map_err(|e| e.to_string())?]);
    let server = match token {
        Some(token) => {
            server.with_authorizer(TokenAuthorizer::new(token).map_err(|e| e.to_string())?)
        }
        None => server,
    };
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| format!("the remote server stopped: {e}"))
}

#[cfg(not(feature = "remote"))]
fn remote_device() -> Result<Device, BackendError> {
    Err(BackendError::NotCompiled {
        asked: "remote",
        feature: "remote",
    })
}

/// Runs one tiny operation on the device, once per process, and turns a backend's panic (wgpu
/// panics when it finds no adapter) into a [`BackendError`].
fn probe(kind: BackendKind, device: &Device) -> Result<(), BackendError> {
    type Probed = Vec<(BackendKind, Result<(), BackendError>)>;
    static RESULTS: OnceLock<Mutex<Probed>> = OnceLock::new();
    let results = RESULTS.get_or_init(|| Mutex::new(Vec::new()));
    let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, known)) = results.iter().find(|(k, _)| *k == kind) {
        return known.clone();
    }
    let outcome = run_probe(kind, device);
    results.push((kind, outcome.clone()));
    outcome
}

fn run_probe(kind: BackendKind, device: &Device) -> Result<(), BackendError> {
    let attempt = guard::catch(|| {
        let t = Tensor::<1>::from_floats([1.0, 2.0], device);
        t.sum().into_scalar::<f32>()
    });
    match attempt {
        Ok(sum) if (sum - 3.0).abs() < 1e-6 => Ok(()),
        Ok(sum) => Err(BackendError::Unavailable {
            asked: kind.name(),
            missing: format!("a probe computed 1 + 2 = {sum}"),
            remedy: "The driver is broken; use --backend flex.",
        }),
        Err(panic) => {
            // Backend panics can run to many lines; the first says what is missing.
            let detail = panic
                .message
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let missing = match kind {
                BackendKind::Wgpu => format!("wgpu found no usable adapter ({detail})"),
                BackendKind::WgpuCpu => {
                    format!("wgpu found no usable CPU (software) adapter ({detail})")
                }
                _ => format!("the backend failed to start ({detail})"),
            };
            Err(BackendError::Unavailable {
                asked: kind.name(),
                missing,
                remedy: remedy(kind),
            })
        }
    }
}

fn remedy(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Wgpu | BackendKind::WgpuCpu => {
            "On a machine without a GPU, install Mesa's software Vulkan driver \
             (Debian: apt-get install mesa-vulkan-drivers libvulkan1), or use --backend flex."
        }
        BackendKind::Cuda => "Check the NVIDIA driver and CUDA toolkit, or use --backend flex.",
        BackendKind::Remote => "Check the server at BURN_REMOTE_ADDRESS, or use --backend flex.",
        BackendKind::Flex | BackendKind::Ndarray => "Use another --backend.",
    }
}

/// Whether `device` (or the device an autodiff device wraps) computes on this machine's CPU
/// cores with a Burn CPU backend (flex or ndarray): where two trainings side by side use two
/// cores, not one GPU queue or one remote server.
pub fn is_host_cpu(device: &Device) -> bool {
    use burn::backend::DispatchDevice as D;
    let inner = match device.as_dispatch() {
        D::Autodiff(_) => device.as_dispatch().clone().inner(),
        other => other.clone(),
    };
    matches!(inner, D::Flex(_) | D::NdArray(_))
}

#[cfg(test)]
mod tests {
    #[test]
    fn flex_and_ndarray_compute_on_the_host_cpu() {
        assert!(is_host_cpu(&Device::flex()));
        assert!(is_host_cpu(&Device::flex().autodiff()));
        assert!(is_host_cpu(&BackendKind::Ndarray.device().unwrap()));
        // A software wgpu adapter runs on the CPU too, but as one queue, not as host threads.
        if let Ok(wgpu) = BackendKind::WgpuCpu.device() {
            assert!(!is_host_cpu(&wgpu.autodiff()));
        }
    }

    use super::*;

    #[test]
    fn parses_every_name_and_rejects_others() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        }
        assert_eq!("WGPU_CPU".parse::<BackendKind>(), Ok(BackendKind::WgpuCpu));
        let err = "tpu".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("unknown backend 'tpu'"), "{err}");
    }

    #[test]
    fn flex_is_the_default_and_runs() {
        assert_eq!(BackendKind::default(), BackendKind::Flex);
        assert!(BackendKind::Flex.device().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = BackendKind::Cuda.device().unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }

    #[test]
    fn only_loopback_may_go_without_a_token() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(check_exposure(at("127.0.0.1:3000"), None).is_ok());
        assert!(check_exposure(at("[::1]:3000"), None).is_ok());
        let open = check_exposure(at("0.0.0.0:3000"), None).unwrap_err();
        assert!(open.contains("without a token"), "{open}");
        assert!(check_exposure(at("10.1.2.3:3000"), None).is_err());
        assert!(check_exposure(at("0.0.0.0:3000"), Some("s3cret")).is_ok());
        assert!(check_exposure(at("127.0.0.1:3000"), Some("")).is_err());
    }

    #[cfg(not(feature = "remote"))]
    #[test]
    fn remote_without_the_feature_is_a_clear_error() {
        let err = BackendKind::Remote.device().unwrap_err();
        assert!(err.to_string().contains("--features remote"), "{err}");
    }
}
