//! Burn's remote backend runs the block: a server on loopback hosts flex, and the block gives
//! the same numbers through it as on flex directly. Built only with `--features remote-server`.

use std::net::TcpListener;

use attention_lab::block::attention::AttentionConfig;
use attention_lab::util::device::{self, BackendKind};
use attention_lab::util::rng::HostRng;

use crate::common::*;

#[test]
fn block_runs_through_a_loopback_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("ws://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || device::serve(BackendKind::Flex, listener));

    let remote = device::remote_device_at(&address).unwrap();
    let local = BackendKind::Flex.device().unwrap();
    let config = AttentionConfig::new(16, 4).with_causal(true).with_seed(50);
    let run = |device| {
        let x = HostRng::new(51).normal_tensor([2, 5, 16], 1.0, device);
        values(config.init(device).unwrap().forward(x).context)
    };
    let diff = max_abs_diff(&run(&remote), &run(&local));
    assert!(diff < 1e-6, "remote differs from flex by {diff}");
}
