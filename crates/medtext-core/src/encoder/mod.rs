//! Text encoders: one module per architecture behind one small trait, so the
//! classifier, pooling and heads never depend on a particular model family.

pub mod bert;

use candle_core::Tensor;

use crate::Result;

/// A transformer encoder that turns token ids into contextual vectors.
pub trait Encoder: Send + Sync {
    /// `input_ids` and `attention_mask` are `[batch, seq]` (u32); returns the last
    /// hidden states, `[batch, seq, hidden]` (f32).
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// Width of the vectors it returns.
    fn hidden_size(&self) -> usize;

    /// Longest sequence it accepts, special tokens included.
    fn max_positions(&self) -> usize;
}
