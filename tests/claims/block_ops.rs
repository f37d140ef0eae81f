//! The transformer block's own ops compute the textbook functions on every device, forward and
//! backward: y = x·W + b with its gradients for x, W and b; GELU(x) = x·Φ(x) with
//! dGELU/dx = Φ(x) + x·φ(x); and y = (x − μ)/√(σ² + ε)·γ + β with its gradients for x, γ and β,
//! all held to an f64 reference computed on the host. The affine map and the layer norm also
//! match Burn's own modules, which the model used before.

use attention_lab::block::attention::seeded_linear;
use attention_lab::block::{gelu, layer_norm, linear};
use attention_lab::util::rng::HostRng;
use burn::nn::LayerNormConfig;
use burn::prelude::*;

use crate::common::*;

/// Φ(x) and φ(x) in f64.
fn normal_cdf_pdf(x: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + gelu::erf_f64(x / std::f64::consts::SQRT_2));
    (
        cdf,
        (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt(),
    )
}

fn assert_close(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sizes differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tolerance * (1.0 + w.abs()),
            "{what}[{i}] = {g}, want {w}"
        );
    }
}

device_test!(gelu_and_its_gradient_are_the_textbook_ones, |device| {
    let device = device.autodiff();
    let mut rng = HostRng::new(3);
    let shape = [2, 5, 37];
    let x = rng.normal_tensor(shape, 2.5, &device).require_grad();
    let upstream = rng.normal_tensor(shape, 1.0, &device);
    let y = gelu::gelu(x.clone());
    let grads = (y.clone() * upstream.clone()).sum().backward();
    let dx = values(x.grad(&grads).expect("x has a gradient"));
    let (xs, gs) = (values(x.inner()), values(upstream.inner()));
    let (mut y_want, mut dx_want) = (Vec::new(), Vec::new());
    for (&x, &g) in xs.iter().zip(&gs) {
        let (cdf, pdf) = normal_cdf_pdf(x as f64);
        y_want.push(x as f64 * cdf);
        dx_want.push(g as f64 * (cdf + x as f64 * pdf));
    }
    assert_close(&values(y.inner()), &y_want, 1e-5, "GELU");
    assert_close(&dx, &dx_want, 1e-5, "dGELU/dx");
});

device_test!(
    layer_norm_and_its_gradients_are_the_textbook_ones,
    |device| {
        let device = device.autodiff();
        let mut rng = HostRng::new(5);
        let (rows, d) = (3 * 7, 24);
        // Off-centre and wide, so that both the centring and the scaling matter.
        let x = (rng.normal_tensor([3, 7, d], 4.0, &device) + 2.0).require_grad();
        let gamma = (rng.normal_tensor([d], 0.5, &device) + 1.0).require_grad();
        let beta = rng.normal_tensor([d], 0.5, &device).require_grad();
        let upstream = rng.normal_tensor([3, 7, d], 1.0, &device);
        let y = layer_norm::layer_norm(x.clone(), gamma.clone(), beta.clone(), layer_norm::EPSILON);
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let grad = |t: &Tensor<1>| values(t.grad(&grads).expect("a gradient"));
        let dx = values(x.grad(&grads).expect("x has a gradient"));
        let (xs, gs, ws, bs) = (
            values(x.clone().inner()),
            values(upstream.inner()),
            values(gamma.clone().inner()),
            values(beta.clone().inner()),
        );
        let (mut y_want, mut dx_want) = (Vec::new(), Vec::new());
        let (mut dw_want, mut db_want) = (vec![0.0; d], vec![0.0; d]);
        for r in 0..rows {
            let row: Vec<f64> = xs[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let g: Vec<f64> = gs[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + layer_norm::EPSILON).sqrt();
            let h: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g_hat: Vec<f64> = (0..d).map(|j| g[j] * ws[j] as f64).collect();
            let mean_g = g_hat.iter().sum::<f64>() / d as f64;
            let mean_gx = (0..d).map(|j| g_hat[j] * h[j]).sum::<f64>() / d as f64;
            for j in 0..d {
                y_want.push(h[j] * ws[j] as f64 + bs[j] as f64);
                dx_want.push((g_hat[j] - mean_g - h[j] * mean_gx) * rstd);
                dw_want[j] += g[j] * h[j];
                db_want[j] += g[j];
            }
        }
        assert_close(&values(y.clone().inner()), &y_want, 1e-5, "y");
        assert_close(&dx, &dx_want, 1e-4, "dL/dx");
        assert_close(&grad(&gamma), &dw_want, 1e-4, "dL/dγ");
        assert_close(&grad(&beta), &db_want, 1e-4, "dL/dβ");

        // And Burn's own module, which the model ran before, gives the same output.
        let mut module = LayerNormConfig::new(d)
            .with_epsilon(layer_norm::EPSILON)
            .init(&device);
        module.gamma = module.gamma.map(|_| gamma.clone());
        module.beta = module.beta.map(|b| b.map(|_| beta.clone()));
        let burns = values(module.forward(x.clone()).inner());
        let ours = values(layer_norm::forward(&module, x).inner());
        assert!(max_abs_diff(&burns, &ours) < 1e-5, "ours and Burn's differ");
    }
);

device_test!(linear_and_its_gradients_are_the_textbook_ones, |device| {
    let device = device.autodiff();
    let mut rng = HostRng::new(9);
    let (batch, n, d_in, d_out) = (3, 7, 19, 33);
    let rows = batch * n;
    let x = rng
        .normal_tensor([batch, n, d_in], 1.0, &device)
        .require_grad();
    let weight = rng
        .normal_tensor([d_in, d_out], 0.3, &device)
        .require_grad();
    let bias = rng.normal_tensor([d_out], 0.3, &device).require_grad();
    let upstream = rng.normal_tensor([batch, n, d_out], 1.0, &device);
    let y = linear::linear(x.clone(), weight.clone(), bias.clone());
    let grads = (y.clone() * upstream.clone()).sum().backward();
    let (xs, ws, bs, gs) = (
        values(x.clone().inner()),
        values(weight.clone().inner()),
        values(bias.clone().inner()),
        values(upstream.inner()),
    );
    let mut y_want = vec![0.0; rows * d_out];
    let mut dx_want = vec![0.0; rows * d_in];
    let mut dw_want = vec![0.0; d_in * d_out];
    let mut db_want = vec![0.0; d_out];
    for r in 0..rows {
        for o in 0..d_out {
            let g = gs[r * d_out + o] as f64;
            y_want[r * d_out + o] = bs[o] as f64;
            db_want[o] += g;
            for i in 0..d_in {
                let (xv, wv) = (xs[r * d_in + i] as f64, ws[i * d_out + o] as f64);
                y_want[r * d_out + o] += xv * wv;
                dx_want[r * d_in + i] += g * wv;
                dw_want[i * d_out + o] += xv * g;
            }
        }
    }
    assert_close(&values(y.inner()), &y_want, 1e-5, "y");
    assert_close(
        &values(x.grad(&grads).expect("dL/dx")),
        &dx_want,
        1e-5,
        "dL/dx",
    );
    assert_close(
        &values(weight.grad(&grads).expect("dL/dW")),
        &dw_want,
        1e-5,
        "dL/dW",
    );
    assert_close(
        &values(bias.grad(&grads).expect("dL/db")),
        &db_want,
        1e-5,
        "dL/db",
    );

    // Burn's module with the same weights gives the same output, with and without a bias.
    for with_bias in [true, false] {
        let module = seeded_linear(
            ws.clone(),
            with_bias.then(|| bs.clone()),
            d_in,
            d_out,
            &device,
        );
        let burns = values(module.forward(x.clone()).inner());
        let ours = values(linear::forward(&module, x.clone()).inner());
        assert!(
            max_abs_diff(&burns, &ours) < 1e-5,
            "ours and Burn's differ (bias: {with_bias})"
        );
    }
});
