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

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{exp, simd_kernel};

/// Added to the score of a padding key: its weight after the soft-max is
/// below `f32::MIN_POSITIVE`, so padding never changes a real token.
const MASKED: f32 = -1e30;

/// `qkv` is `[batch, seq, 3 * hidden]` (Q, then K, then V, as the fused
/// projection writes them); `key_bias` is `[batch, seq]`, 0 for a real token and
/// [`MASKED`] for padding (see [`key_bias`]). Returns the context
/// `[batch, seq, hidden]`. Differentiable with respect to `qkv`: the backward
/// pass recomputes each head's attention weights instead of keeping them, so
/// evidence costs no `heads × seq × seq` tensors either.
pub(crate) fn fused_attention(
    qkv: &Tensor,
    key_bias: &Tensor,
    heads: usize,
) -> candle_core::Result<Tensor> {
    qkv.contiguous()?
        .apply_op2(&key_bias.contiguous()?, FusedAttention { heads })
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

/// The sizes of one call, checked against the tensors' layouts.
#[derive(Clone, Copy)]
struct Geometry {
    batch: usize,
    seq: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Geometry {
    fn new(qkv: &Layout, bias: &Layout, heads: usize) -> candle_core::Result<Self> {
        let (batch, seq, width) = qkv.shape().dims3()?;
        let hidden = width / 3;
        if width != 3 * hidden || heads == 0 || hidden % heads != 0 {
            candle_core::bail!("fused attention: width {width} does not split into Q, K, V heads");
        }
        if bias.shape().dims() != [batch, seq] {
            candle_core::bail!("fused attention: the key mask does not match the batch");
        }
        let head_dim = hidden / heads;
        Ok(Self {
            batch,
            seq,
            hidden,
            heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        })
    }

    fn width(&self) -> usize {
        3 * self.hidden
    }
}

/// The f32 elements of a contiguous tensor, exactly `len` of them.
fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("fused attention runs on f32 tensors only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(&values[start..end]),
        _ => candle_core::bail!("fused attention needs contiguous inputs"),
    }
}

/// A pointer to an output that tasks for different (sequence, head) pairs
/// write through: each writes only its own rows × columns, so no two tasks
/// ever touch the same element.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
// SAFETY: see the type's comment; the buffer outlives the parallel loop.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

/// Per-thread `seq × seq` buffers, kept between calls.
#[derive(Default)]
struct Scratch {
    probabilities: Vec<f32>,
    gradient: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `dst ← beta · lhs · rhs` for row-major views given by their row and
/// column strides (in elements); `m × k` times `k × n`.
///
/// # Safety
/// Every view must lie inside its buffer and `dst` must not overlap the
/// inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        false,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Runs `task(b, h, q, k, v, probabilities, scratch)` for every sequence `b`
/// and head `h` in parallel, after filling `probabilities` (`seq × seq`)
/// with that head's attention weights. `q`, `k`, `v` point at the head's
/// first element in `qkv`; their rows are `3 * hidden` apart.
fn for_each_head(
    g: Geometry,
    qkv: &[f32],
    bias: &[f32],
    task: impl Fn(usize, usize, [*const f32; 3], &[f32], &mut Vec<f32>) + Sync,
) {
    let width = g.width();
    (0..g.batch * g.heads).into_par_iter().for_each(|t| {
        let (b, h) = (t / g.heads, t % g.heads);
        let rows = &qkv[b * g.seq * width..(b + 1) * g.seq * width];
        let bias = &bias[b * g.seq..(b + 1) * g.seq];
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                probabilities,
                gradient,
            } = &mut *scratch;
            probabilities.resize(g.seq * g.seq, 0.0);
            // SAFETY: `rows` holds `seq` rows of `width` floats; Q, K and V of
            // head `h` start at columns `h*head_dim`, `hidden + h*head_dim` and
            // `2*hidden + h*head_dim` and span `head_dim` columns.
            let qkv_heads = unsafe {
                let first = rows.as_ptr();
                [
                    first.add(h * g.head_dim),
                    first.add(g.hidden + h * g.head_dim),
                    first.add(2 * g.hidden + h * g.head_dim),
                ]
            };
            let [q, k, _] = qkv_heads;
            // SAFETY: as above; `probabilities` is `seq × seq`.
            unsafe {
                // probabilities[i][j] = scale · q_i · k_j
                matmul(
                    (g.seq, g.seq, g.head_dim),
                    (probabilities.as_mut_ptr(), g.seq),
                    (q, width, 1),
                    (k, 1, width),
                    g.scale,
                );
            }
            softmax_rows(probabilities, g.seq, bias);
            task(b, h, qkv_heads, probabilities, gradient);
        });
    });
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
        let g = Geometry::new(qkv_layout, bias_layout, self.heads)?;
        let qkv = contiguous_f32(qkv, qkv_layout, g.batch * g.seq * g.width())?;
        let bias = contiguous_f32(bias, bias_layout, g.batch * g.seq)?;
        let mut out = vec![0f32; g.batch * g.seq * g.hidden];
        let shared = SharedOutput(out.as_mut_ptr());
        for_each_head(g, qkv, bias, |b, h, [_, _, v], p, _| {
            let out = shared;
            // SAFETY: the block of rows `b*seq..(b+1)*seq`, columns of head
            // `h`, lies inside `out` and only this task writes it.
            unsafe {
                // context_i = Σ_j p_ij v_j
                let dst = out.0.add(b * g.seq * g.hidden + h * g.head_dim);
                matmul(
                    (g.seq, g.head_dim, g.seq),
                    (dst, g.hidden),
                    (p.as_ptr(), g.seq, 1),
                    (v, g.width(), 1),
                    1.0,
                );
            }
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, g.seq, g.hidden)),
        ))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _context: &Tensor,
        grad_context: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_qkv = qkv.apply_op3_no_bwd(
            bias,
            &grad_context.contiguous()?,
            &FusedAttentionBackward { heads: self.heads },
        )?;
        // The mask is a constant: it has no gradient to give.
        Ok((Some(grad_qkv), None))
    }
}

/// The gradient of [`FusedAttention`] with respect to `qkv`, given the
/// gradient of its output.
struct FusedAttentionBackward {
    heads: usize,
}

impl CustomOp3 for FusedAttentionBackward {
    fn name(&self) -> &'static str {
        "medtext-fused-attention-backward"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(qkv_layout, bias_layout, self.heads)?;
        let width = g.width();
        let qkv = contiguous_f32(qkv, qkv_layout, g.batch * g.seq * width)?;
        let bias = contiguous_f32(bias, bias_layout, g.batch * g.seq)?;
        let grad = contiguous_f32(grad, grad_layout, g.batch * g.seq * g.hidden)?;
        let mut out = vec![0f32; g.batch * g.seq * width];
        let shared = SharedOutput(out.as_mut_ptr());
        for_each_head(g, qkv, bias, |b, h, [q, k, v], p, dp| {
            let out = shared;
            dp.resize(g.seq * g.seq, 0.0);
            let (seq, d) = (g.seq, g.head_dim);
            // SAFETY: the gradient's head block and this task's Q, K, V
            // gradient columns lie inside their buffers; only this task
            // writes those columns of those rows.
            unsafe {
                let d_out = grad.as_ptr().add(b * seq * g.hidden + h * d);
                let rows = out.0.add(b * seq * width);
                let (dq, dk, dv) = (
                    rows.add(h * d),
                    rows.add(g.hidden + h * d),
                    rows.add(2 * g.hidden + h * d),
                );
                // dV = Pᵀ · dO
                matmul(
                    (seq, d, seq),
                    (dv, width),
                    (p.as_ptr(), 1, seq),
                    (d_out, g.hidden, 1),
                    1.0,
                );
                // dP = dO · Vᵀ
                matmul(
                    (seq, seq, d),
                    (dp.as_mut_ptr(), seq),
                    (d_out, g.hidden, 1),
                    (v, 1, width),
                    1.0,
                );
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), the soft-max's gradient.
                for (dp_row, p_row) in dp.chunks_exact_mut(seq).zip(p.chunks_exact(seq)) {
                    let dot = lane_reduce_pairs(dp_row, p_row);
                    for (x, p) in dp_row.iter_mut().zip(p_row) {
                        *x = p * (*x - dot);
                    }
                }
                // dQ = scale · dS · K ; dK = scale · dSᵀ · Q
                matmul(
                    (seq, d, seq),
                    (dq, width),
                    (dp.as_ptr(), seq, 1),
                    (k, width, 1),
                    g.scale,
                );
                matmul(
                    (seq, d, seq),
                    (dk, width),
                    (dp.as_ptr(), 1, seq),
                    (q, width, 1),
                    g.scale,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((g.batch, g.seq, width))))
    }
}

/// `Σ a_i · b_i` in [`LANES`] independent sums, so it vectorises.
fn lane_reduce_pairs(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.into_iter().sum::<f32>() + tail
}

simd_kernel! {
    /// Each `seq`-long row of `scores` ← softmax(row + bias).
    fn softmax_rows(scores: &mut [f32], seq: usize, bias: &[f32]) {
        for row in scores.chunks_exact_mut(seq) {
            masked_softmax_in_place(row, bias);
        }
    }
}

/// `row ← softmax(row + bias)`. Each pass is a plain loop over the row, or
/// a reduction into [`LANES`] independent accumulators, so the compiler turns
/// all three into SIMD code (a single running sum or max would force it to
/// add one float at a time, in order).
#[inline(always)]
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

const LANES: usize = 16;

#[inline(always)]
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
    use candle_core::{Device, Var, D};

    use super::*;
    use crate::encoder::tests::{input_gradient, max_abs_diff};

    const HEADS: usize = 3;
    const HEAD_DIM: usize = 4;

    /// Attention the textbook way, with tensor ops: the reference.
    fn written_out(qkv: &Tensor, mask: &Tensor) -> Tensor {
        let (batch, seq, width) = qkv.dims3().unwrap();
        let hidden = width / 3;
        let split = |i: usize| {
            qkv.narrow(2, i * hidden, hidden)
                .unwrap()
                .reshape((batch, seq, HEADS, HEAD_DIM))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (HEAD_DIM as f64).sqrt()).unwrap();
        let bias = key_bias(mask).unwrap().reshape((batch, 1, 1, seq)).unwrap();
        let p = candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, seq, hidden))
            .unwrap()
    }

    /// Two sequences; the second is half padding.
    fn inputs() -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 7, 3 * HEADS * HEAD_DIM), &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], &dev).unwrap();
        (qkv, mask)
    }

    #[test]
    fn fused_attention_equals_attention_written_out() {
        let (qkv, mask) = inputs();
        let fused = fused_attention(&qkv, &key_bias(&mask).unwrap(), HEADS).unwrap();
        let diff = max_abs_diff(&fused, &written_out(&qkv, &mask));
        assert!(diff < 1e-5, "max difference {diff}");
    }

    #[test]
    fn fused_attention_has_the_gradient_of_attention_written_out() {
        let (qkv, mask) = inputs();
        let weights = Tensor::randn(0f32, 1.0, (2, 7, HEADS * HEAD_DIM), &Device::Cpu).unwrap();
        let gradient = |attention: &dyn Fn(&Tensor) -> Tensor| {
            let x = Var::from_tensor(&qkv).unwrap();
            input_gradient(&x, &attention(x.as_tensor()), &weights)
        };
        let bias = key_bias(&mask).unwrap();
        let fused = gradient(&|x| fused_attention(x, &bias, HEADS).unwrap());
        let reference = gradient(&|x| written_out(x, &mask));
        let diff = max_abs_diff(&fused, &reference);
        assert!(diff < 1e-5, "gradients differ by {diff}");
        let zero = reference.zeros_like().unwrap();
        assert!(
            max_abs_diff(&reference, &zero) > 1e-3,
            "the gradient is not zero"
        );
    }
}
