//! Attention masks. Convention throughout: `true` means masked (the key is hidden from the query).
//!
//! The causal mask hides key j from query i when j > i, so position i sees only 0..=i
//! (Vaswani et al. 2017, §3.2.3). A key-padding mask hides the padded keys of each sequence.

use burn::prelude::*;

/// `[n_q, n_k]`, true where key j lies in query i's future (j > i).
pub fn causal_mask(n_q: usize, n_k: usize, device: &Device) -> Tensor<2, Bool> {
    // Burn's `tril_mask` is true *outside* the lower triangle (the part to fill), i.e. j > i.
    Tensor::<2, Bool>::tril_mask([n_q, n_k], 0, device)
}

/// Combines a causal flag and an optional key-padding mask `[batch, n_k]` into one mask that
/// broadcasts over heads, `[batch, 1, n_q, n_k]`; `None` when nothing is masked.
pub fn attention_mask(
    batch: usize,
    n_q: usize,
    n_k: usize,
    causal: bool,
    key_padding: Option<Tensor<2, Bool>>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let causal = causal.then(|| {
        causal_mask(n_q, n_k, device)
            .reshape([1, 1, n_q, n_k]) // [1, 1, n_q, n_k]
            .expand([batch, 1, n_q, n_k]) // [batch, 1, n_q, n_k]
    });
    let padding = key_padding.map(|pad| {
        pad.reshape([batch, 1, 1, n_k]) // [batch, 1, 1, n_k]
            .expand([batch, 1, n_q, n_k]) // [batch, 1, n_q, n_k]
    });
    match (causal, padding) {
        (Some(c), Some(p)) => Some(c.bool_or(p)),
        (c, p) => c.or(p),
    }
}

/// `[batch, n_k]` key-padding mask from each sequence's true length: keys at or past the length
/// are padding.
pub fn padding_mask(lengths: &[usize], n_k: usize, device: &Device) -> Tensor<2, Bool> {
    let flags: Vec<bool> = lengths
        .iter()
        .flat_map(|&len| (0..n_k).map(move |j| j >= len))
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(flags, [lengths.len(), n_k]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<const D: usize>(t: Tensor<D, Bool>) -> Vec<bool> {
        t.into_data().try_into_vec::<bool>().unwrap()
    }

    #[test]
    fn causal_hides_the_future() {
        let device = Device::flex();
        #[rustfmt::skip]
        let want = vec![
            false, true,  true,
            false, false, true,
            false, false, false,
        ];
        assert_eq!(flags(causal_mask(3, 3, &device)), want);
    }

    #[test]
    fn combines_causal_and_padding() {
        let device = Device::flex();
        let pad = padding_mask(&[1], 2, &device); // key 1 is padding
        let mask = attention_mask(1, 2, 2, true, Some(pad), &device).unwrap();
        assert_eq!(mask.dims(), [1, 1, 2, 2]);
        // query 0: key 1 is future and padding; query 1: key 1 is padding.
        assert_eq!(flags(mask), vec![false, true, false, true]);
        assert!(attention_mask(1, 2, 2, false, None, &device).is_none());
    }
}
