//! Attention masks. Convention throughout: `true` means masked (the key is hidden from the query).
//!
//! The causal mask hides key j from query i when j > i, so position i sees only 0..=i
//! (Vaswani et al. 2017, §3.2.3). A key-padding mask hides the padded keys of each sequence.
//! A sliding [`Window`] hides, besides the future, every key more than `size − 1` positions back,
//! except the first `keep_first`: a rolling KV cache of `size` entries, with or without the
//! attention sinks that StreamingLLM keeps (Xiao et al. 2023, "Efficient Streaming Language
//! Models with Attention Sinks", §3.2).

use burn::prelude::*;

/// `[n_q, n_k]`, true where key j lies in query i's future (j > i).
pub fn causal_mask(n_q: usize, n_k: usize, device: &Device) -> Tensor<2, Bool> {
    // Burn's `tril_mask` is true *outside* the lower triangle (the part to fill), i.e. j > i.
    Tensor::<2, Bool>::tril_mask([n_q, n_k], 0, device)
}

/// A rolling cache: query i sees keys i − size + 1 ..= i, and keys 0 .. keep_first always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub size: usize,
    pub keep_first: usize,
}

impl Window {
    /// `[n_q, n_k]`, true where key j is hidden from query i: in its future, or out of the window
    /// and not one of the kept first keys.
    pub fn mask(&self, n_q: usize, n_k: usize, device: &Device) -> Tensor<2, Bool> {
        let flags: Vec<bool> = (0..n_q)
            .flat_map(|i| {
                (0..n_k).map(move |j| j > i || (j + self.size <= i && j >= self.keep_first))
            })
            .collect();
        Tensor::from_data(TensorData::new(flags, [n_q, n_k]), device)
    }
}

/// Combines a causal flag, an optional key-padding mask `[batch, n_k]` and an optional sliding
/// window into one mask that broadcasts over heads, `[batch, 1, n_q, n_k]`; `None` when nothing
/// is masked.
pub fn attention_mask(
    batch: usize,
    n_q: usize,
    n_k: usize,
    causal: bool,
    key_padding: Option<Tensor<2, Bool>>,
    window: Option<Window>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let causal = (causal || window.is_some()).then(|| {
        match window {
            Some(window) => window.mask(n_q, n_k, device),
            None => causal_mask(n_q, n_k, device),
        }
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
    fn a_window_hides_old_keys_but_the_kept_ones() {
        let device = Device::flex();
        let window = Window {
            size: 2,
            keep_first: 1,
        };
        #[rustfmt::skip]
        let want = vec![
            false, true,  true,  true,
            false, false, true,  true,
            false, false, false, true,
            false, true,  false, false,
        ];
        assert_eq!(flags(window.mask(4, 4, &device)), want);
    }

    #[test]
    fn combines_causal_and_padding() {
        let device = Device::flex();
        let pad = padding_mask(&[1], 2, &device); // key 1 is padding
        let mask = attention_mask(1, 2, 2, true, Some(pad), None, &device).unwrap();
        assert_eq!(mask.dims(), [1, 1, 2, 2]);
        // query 0: key 1 is future and padding; query 1: key 1 is padding.
        assert_eq!(flags(mask), vec![false, true, false, true]);
        assert!(attention_mask(1, 2, 2, false, None, None, &device).is_none());
    }
}
