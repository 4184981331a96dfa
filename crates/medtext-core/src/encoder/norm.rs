//! LayerNorm over the last dimension, with a gradient for its input.
//!
//! Candle's fused LayerNorm has no backward pass and its composed version
//! keeps six full-size intermediates per call for the backward pass; in the
//! evidence pass those were most of the memory. Here the backward pass
//! recomputes each row's mean and deviation from the input, so only the
//! input is kept.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn new(weight: Tensor, bias: Tensor, eps: f32) -> Self {
        Self { weight, bias, eps }
    }

    /// `x` is `[rows, dim]`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(LayerNormOp {
            weight: self.weight.to_vec1::<f32>()?,
            bias: self.bias.to_vec1::<f32>()?,
            eps: self.eps,
        })
    }
}

struct LayerNormOp {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// The rows of a contiguous `[rows, dim]` f32 tensor.
fn rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    dim: usize,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("layer norm runs on f32 tensors only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if dim > 0 && (end - start) % dim == 0 => Ok(&values[start..end]),
        _ => candle_core::bail!("layer norm needs a contiguous [rows, {dim}] input"),
    }
}

/// Mean and 1/σ of one row.
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (variance + eps).sqrt())
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "medtext-layer-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dim = self.weight.len();
        let x = rows(x, layout, dim)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .for_each(|(out, row)| {
                let (mean, inv) = moments(row, self.eps);
                for (((o, v), w), b) in out.iter_mut().zip(row).zip(&self.weight).zip(&self.bias) {
                    *o = (v - mean) * inv * w + b;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// `dx = (g − mean(g) − x̂ · mean(g · x̂)) / σ` with `g = dy · w`.
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let backward = LayerNormBackward {
            weight: self.weight.clone(),
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &backward)?))
    }
}

struct LayerNormBackward {
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "medtext-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dim = self.weight.len();
        let (x, dy) = (rows(x, x_layout, dim)?, rows(dy, dy_layout, dim)?);
        if x.len() != dy.len() {
            candle_core::bail!("layer norm backward: gradient and input differ in size");
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(dim)
            .zip(x.par_chunks(dim).zip(dy.par_chunks(dim)))
            .for_each(|(dx, (row, dy))| {
                let (mean, inv) = moments(row, self.eps);
                let n = dim as f32;
                let (mut mean_g, mut mean_gx) = (0f32, 0f32);
                for ((v, d), w) in row.iter().zip(dy).zip(&self.weight) {
                    let g = d * w;
                    mean_g += g;
                    mean_gx += g * (v - mean) * inv;
                }
                mean_g /= n;
                mean_gx /= n;
                for (((o, v), d), w) in dx.iter_mut().zip(row).zip(dy).zip(&self.weight) {
                    let x_hat = (v - mean) * inv;
                    *o = (d * w - mean_g - x_hat * mean_gx) * inv;
                }
            });
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::encoder::tests::{input_gradient, max_abs_diff};

    #[test]
    fn layer_norm_and_its_gradient_match_the_composed_version() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (5, 12), &dev).unwrap()).unwrap();
        let w = Tensor::randn(1f32, 0.3, 12, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 12, &dev).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (5, 12), &dev).unwrap();
        let ours = LayerNorm::new(w.clone(), b.clone(), 1e-12);
        let reference = |t: &Tensor| candle_nn::ops::layer_norm_slow(t, &w, &b, 1e-12).unwrap();
        let y = ours.forward(x.as_tensor()).unwrap();
        assert!(max_abs_diff(&y, &reference(x.as_tensor())) < 1e-5);
        let gradient = |y: &Tensor| input_gradient(&x, y, &upstream);
        let diff = max_abs_diff(&gradient(&y), &gradient(&reference(x.as_tensor())));
        assert!(diff < 1e-4, "gradients differ by {diff}");
    }
}
