//! Fused multi-head self-attention for the CPU.
//!
//! Done with separate tensor ops, attention materialises the scores of every
//! head (`[batch, heads, seq, seq]`), adds the mask in another pass, soft-maxes
//! in a third and multiplies in a fourth, after copying Q, K and V into
//! head-major layout. On a 2-core workstation that is where Candle lost most
//! against ONNX Runtime at long inputs (see `../shared/notes/candle-cpu.md`).
//! Here each (sequence, head) pair is one task: its scores live in a
//! thread-local `seq × seq` scratch that stays in cache, the mask and the
//! soft-max are applied in place, and the context is written straight into
//! its columns of the output. Q, K and V are read where the fused QKV
//! projection left them, through strides, so nothing is copied.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::exp;

/// Added to the score of a padding key: its weight after the soft-max is
/// below `f32::MIN_POSITIVE`, so padding never changes a real token.
const MASKED: f32 = -1e30;

/// `qkv` is `[batch, seq, 3 * hidden]` (Q, then K, then V, as the fused
/// projection writes them); `key_bias` is `[batch, seq]`, 0 for a real token and
/// [`MASKED`] for padding (see [`key_bias`]). Returns the context
/// `[batch, seq, hidden]`.
pub(crate) fn fused_attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    heads: usize,
) -> candle_core::Result<Tensor> {
    qkv.contiguous()?
        .apply_op2_no_bwd(&key_bias.contiguous()?, &FusedAttention { heads })
}

/// The additive key mask for [`fused_attention`] from a `[batch, seq]` u32
/// attention mask (1 = real token).
pub(crate) fn key_bias(attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    let real = attention_mask.to_dtype(candle_core::DType::F32)?;
    (real.affine(-1.0, 1.0)? * f64::from(MASKED))?.contiguous()
}

struct FusedAttention {
    heads: usize,
}

/// A pointer to the output that tasks for different (sequence, head) pairs
/// write through: each writes only its own rows × columns, so no two tasks
/// ever touch the same element.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
// SAFETY: see the type's comment; the buffer outlives the parallel loop.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl CustomOp2 for FusedAttention {
    fn name(&self) -> &'static str {
        "medtext-fused-attention"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, seq, width) = qkv_layout.shape().dims3()?;
        let hidden = width / 3;
        if width != 3 * hidden || hidden % self.heads != 0 {
            candle_core::bail!("fused attention: width {width} does not split into Q, K, V heads");
        }
        if bias_layout.shape().dims() != [batch, seq] {
            candle_core::bail!("fused attention: the key mask does not match the batch");
        }
        let (CpuStorage::F32(qkv), CpuStorage::F32(bias)) = (qkv, bias) else {
            candle_core::bail!("fused attention runs on f32 tensors only");
        };
        let (Some((qkv_start, _)), Some((bias_start, _))) = (
            qkv_layout.contiguous_offsets(),
            bias_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("fused attention needs contiguous inputs");
        };
        let qkv = &qkv[qkv_start..qkv_start + batch * seq * width];
        let bias = &bias[bias_start..bias_start + batch * seq];
        let head_dim = hidden / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();

        let mut out = vec![0f32; batch * seq * hidden];
        let shared = SharedOutput(out.as_mut_ptr());
        (0..batch * self.heads).into_par_iter().for_each(|task| {
            let (b, h) = (task / self.heads, task % self.heads);
            let rows = &qkv[b * seq * width..(b + 1) * seq * width];
            let bias = &bias[b * seq..(b + 1) * seq];
            SCORES.with(|scores| {
                let mut scores = scores.borrow_mut();
                scores.resize(seq * seq, 0.0);
                let out = shared;
                // SAFETY: `rows` holds seq rows of `width` floats; Q, K and V of
                // head `h` are `head_dim` columns at offsets `h*head_dim`,
                // `hidden + h*head_dim` and `2*hidden + h*head_dim`. The output
                // block is rows `b*seq..(b+1)*seq`, columns of head `h`: within
                // `out` and written by this task alone.
                unsafe {
                    let q = rows.as_ptr().add(h * head_dim);
                    let k = rows.as_ptr().add(hidden + h * head_dim);
                    let v = rows.as_ptr().add(2 * hidden + h * head_dim);
                    let w = width as isize;
                    // scores[i][j] = scale * q_i · k_j
                    gemm::gemm(
                        seq,
                        seq,
                        head_dim,
                        scores.as_mut_ptr(),
                        1,
                        seq as isize,
                        false,
                        q,
                        1,
                        w,
                        k,
                        w,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for row in scores.chunks_exact_mut(seq) {
                        masked_softmax_in_place(row, bias);
                    }
                    // context_i = Σ_j p_ij v_j
                    let dst = out.0.add(b * seq * hidden + h * head_dim);
                    gemm::gemm(
                        seq,
                        head_dim,
                        seq,
                        dst,
                        1,
                        hidden as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        seq as isize,
                        v,
                        1,
                        w,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((batch, seq, hidden))))
    }
}

/// `row ← softmax(row + bias)`. Each pass is a plain loop over the row, or
/// a reduction into [`LANES`] independent accumulators, so the compiler turns
/// all three into SIMD code (a single running sum or max would force it to
/// add one float at a time, in order).
fn masked_softmax_in_place(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x += b;
    }
    let max = lane_reduce(row, f32::MIN, f32::max);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inverse = 1.0 / lane_reduce(row, 0.0, |a, b| a + b);
    for x in row.iter_mut() {
        *x *= inverse;
    }
}

const LANES: usize = 8;

fn lane_reduce(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, *v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, v| f(a, *v));
    lanes.into_iter().fold(tail, f)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;

    /// The fused kernel against attention written out with tensor ops, on a
    /// batch whose second sequence is half padding.
    #[test]
    fn fused_attention_equals_attention_written_out() {
        let dev = Device::Cpu;
        let (batch, seq, heads, head_dim) = (2, 7, 3, 4);
        let hidden = heads * head_dim;
        let qkv = Tensor::randn(0f32, 1.0, (batch, seq, 3 * hidden), &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], &dev).unwrap();
        let fused = fused_attention(&qkv, &key_bias(&mask).unwrap(), heads).unwrap();

        let split = |i: usize| {
            qkv.narrow(2, i * hidden, hidden)
                .unwrap()
                .reshape((batch, seq, heads, head_dim))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
        let bias = key_bias(&mask)
            .unwrap()
            .reshape((batch, 1, 1, seq))
            .unwrap();
        let p = candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
        let expected = p
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, seq, hidden))
            .unwrap();
        let diff = (fused - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
