//! Text encoders: one module per architecture behind one small trait, so the
//! classifier, pooling and heads never depend on a particular model family.

pub mod adapter;
mod attention;
pub mod bert;
pub mod distilbert;
mod linear;
mod math;
mod norm;
pub mod transformer;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// A transformer encoder that turns token ids into contextual vectors.
pub trait Encoder: Send + Sync {
    /// `input_ids` and `attention_mask` are `[batch, seq]` (u32); returns the last
    /// hidden states, `[batch, seq, hidden]` (f32).
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// The word-embedding rows of `input_ids`, `[batch, seq, hidden]`: the input
    /// that evidence attributes the prediction to.
    fn word_embeddings(&self, input_ids: &Tensor) -> Result<Tensor>;

    /// The same result as [`Encoder::forward`], from word embeddings and
    /// through operations that all have gradients (slower; for evidence).
    fn forward_from_word_embeddings(
        &self,
        word: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor>;

    /// Width of the vectors it returns.
    fn hidden_size(&self) -> usize;

    /// Longest sequence it accepts, special tokens included.
    fn max_positions(&self) -> usize;
}

/// Memory-maps a `model.safetensors` as f32 weights on the CPU, or, with an
/// adapter, reads them and adds its deltas (see [`adapter`]).
fn map_weights(weights: &Path, adapter: Option<&Path>) -> Result<VarBuilder<'static>> {
    if let Some(adapter) = adapter {
        return adapter::adapted_weights(weights, adapter);
    }
    // SAFETY: a read-only mapping of a file whose hash the pack verified;
    // MedText never writes to model files.
    unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
        .map_err(|e| Error::pack(weights, format!("cannot read the weights: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor};

    use super::Encoder;

    /// Adds an identity LayerNorm (`{name}.weight` ones, `{name}.bias` zeros).
    pub(crate) fn insert_layer_norm(
        t: &mut std::collections::HashMap<String, Tensor>,
        name: &str,
        dim: usize,
    ) {
        let dev = Device::Cpu;
        t.insert(
            format!("{name}.weight"),
            Tensor::ones(dim, candle_core::DType::F32, &dev).unwrap(),
        );
        t.insert(
            format!("{name}.bias"),
            Tensor::zeros(dim, candle_core::DType::F32, &dev).unwrap(),
        );
    }

    /// Largest element-wise difference of two tensors of the same shape.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// `∂ Σ(y · upstream) / ∂ x`: the gradient a backward pass sends to `x`
    /// when `y` (computed from `x`) receives `upstream`.
    pub(crate) fn input_gradient(x: &candle_core::Var, y: &Tensor, upstream: &Tensor) -> Tensor {
        (y * upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .clone()
    }

    /// The fast pass and the differentiable pass are the same function.
    pub(crate) fn assert_both_passes_agree(enc: &dyn Encoder) {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[2u32, 4, 5, 6, 7, 3], [2, 9, 8, 3, 0, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev).unwrap();
        let fast = enc.forward(&ids, &mask).unwrap();
        let word = enc.word_embeddings(&ids).unwrap();
        let slow = enc.forward_from_word_embeddings(&word, &mask).unwrap();
        // Padding rows may differ (they are never read); real tokens may not.
        let real = |t: &Tensor| {
            Tensor::cat(
                &[
                    t.get(0).unwrap(),
                    t.get(1).unwrap().narrow(0, 0, 4).unwrap(),
                ],
                0,
            )
            .unwrap()
        };
        let diff = max_abs_diff(&real(&fast), &real(&slow));
        assert!(
            diff < 1e-5,
            "fast and differentiable passes differ by {diff}"
        );
    }

    /// The vectors of real tokens must not change when padding is appended:
    /// the attention mask has to hide it completely.
    pub(crate) fn assert_padding_is_ignored(enc: &dyn Encoder) {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[2u32, 4, 5, 3]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1]], &dev).unwrap();
        let alone = enc.forward(&ids, &mask).unwrap();
        assert_eq!(alone.dims(), &[1, 4, enc.hidden_size()]);
        let padded_ids = Tensor::new(&[[2u32, 4, 5, 3, 0, 0]], &dev).unwrap();
        let padded_mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &dev).unwrap();
        let padded = enc.forward(&padded_ids, &padded_mask).unwrap();
        let diff = max_abs_diff(&alone, &padded.narrow(1, 0, 4).unwrap());
        assert!(diff < 1e-5, "padding changed real tokens by {diff}");
    }
}
