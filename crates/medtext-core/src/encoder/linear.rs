//! Dense layers for the encoder: `y = x · W + b` as one matrix multiply that
//! starts from the bias (no separate broadcast-add pass), with a gradient for
//! `x` only.
//!
//! Candle's own matmul also differentiates with respect to the weights. For
//! evidence that is pure waste: one extra matrix multiply per layer, and
//! every weight gradient kept until the backward pass ends (about 200 MB for
//! MiniLM). Weights here are constants of the op, so they get none.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::math::gelu_in_place;
use rayon::prelude::*;

/// `W` is stored transposed (`[inputs, outputs]`) and contiguous, so the
/// multiply reads it in row order.
pub(crate) struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `weight` is `[outputs, inputs]` as PyTorch stores it; `bias` `[outputs]`.
    pub(crate) fn new(weight: &Tensor, bias: &Tensor) -> candle_core::Result<Self> {
        let (outputs, _) = weight.dims2()?;
        if bias.dims1()? != outputs {
            candle_core::bail!(
                "bias {:?} does not fit weight {:?}",
                bias.dims(),
                weight.dims()
            );
        }
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias: bias.contiguous()?,
        })
    }

    pub(crate) fn dims(&self) -> &[usize] {
        self.weight_t.dims()
    }

    /// `x` is `[rows, inputs]`; returns `[rows, outputs]`. Differentiable
    /// with respect to `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(self.op(None, false))
    }

    /// `act(x · W + b) + residual`, the epilogue applied to each block of
    /// rows while it is still in cache, instead of as separate passes over
    /// the whole output. For the fast pass only: it has no gradient.
    pub(crate) fn forward_fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gelu: bool,
    ) -> candle_core::Result<Tensor> {
        let residual = residual.map(Tensor::contiguous).transpose()?;
        x.contiguous()?.apply_op1_no_bwd(&self.op(residual, gelu))
    }

    fn op(&self, residual: Option<Tensor>, gelu: bool) -> LinearOp {
        LinearOp {
            weight_t: self.weight_t.clone(),
            bias: self.bias.clone(),
            residual,
            gelu,
        }
    }
}

struct LinearOp {
    weight_t: Tensor,
    bias: Tensor,
    /// Added to the output after the activation, `[rows, outputs]`.
    residual: Option<Tensor>,
    /// Exact GELU on `x · W + b`.
    gelu: bool,
}

/// The f32 elements of a contiguous CPU tensor, without a copy.
fn with_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
        candle_core::bail!("linear layers work on f32 tensors on the CPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("linear layers need contiguous tensors");
    };
    f(&values[start..end])
}

/// The f32 elements of a contiguous CPU tensor.
fn f32_values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "medtext-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inputs) = layout.shape().dims2()?;
        let (weight_inputs, outputs) = self.weight_t.dims2()?;
        if inputs != weight_inputs {
            candle_core::bail!("linear: {inputs} inputs on a layer of {weight_inputs}");
        }
        let CpuStorage::F32(x) = x else {
            candle_core::bail!("linear layers run on f32 tensors only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("linear layers need a contiguous input");
        };
        let x = &x[start..end];
        let bias = f32_values(&self.bias)?;
        if let Some(residual) = &self.residual {
            if residual.dims() != [rows, outputs] {
                candle_core::bail!(
                    "linear: residual {:?} does not fit the output",
                    residual.dims()
                );
            }
        }
        let mut out = vec![0f32; rows * outputs];
        // One block of rows per thread, each a single-threaded multiply and
        // its epilogue: one fork-join per layer. Letting gemm parallelise
        // inside cost hundreds of thread wake-ups per forward pass and made
        // latency erratic.
        let rows_per_task = rows.div_ceil(rayon::current_num_threads()).max(1);
        with_f32(&self.weight_t, |w| {
            let residual = self.residual.as_ref();
            let mut run = |residual: Option<&[f32]>| {
                out.par_chunks_mut(rows_per_task * outputs)
                    .zip(x.par_chunks(rows_per_task * inputs))
                    .enumerate()
                    .for_each(|(block, (out, x))| {
                        for row in out.chunks_exact_mut(outputs) {
                            row.copy_from_slice(&bias);
                        }
                        let rows = x.len() / inputs;
                        // SAFETY: `x` is rows × inputs, `w` inputs × outputs
                        // and `out` rows × outputs, all row-major and distinct.
                        unsafe {
                            gemm::gemm(
                                rows,
                                outputs,
                                inputs,
                                out.as_mut_ptr(),
                                1,
                                outputs as isize,
                                true,
                                x.as_ptr(),
                                1,
                                inputs as isize,
                                w.as_ptr(),
                                1,
                                outputs as isize,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        if self.gelu {
                            gelu_in_place(out);
                        }
                        if let Some(residual) = residual {
                            let start = block * rows_per_task * outputs;
                            let len = out.len();
                            for (o, r) in out.iter_mut().zip(&residual[start..start + len]) {
                                *o += r;
                            }
                        }
                    });
                Ok(())
            };
            match residual {
                Some(r) => with_f32(r, |r| run(Some(r))),
                None => run(None),
            }
        })?;
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    /// `∂L/∂x = ∂L/∂y · Wᵀ`; the weights and bias are constants.
    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight_t.t()?)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::encoder::tests::{input_gradient, max_abs_diff};

    #[test]
    fn linear_is_x_times_w_transposed_plus_b_with_the_input_gradient() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3), &dev).unwrap()).unwrap();
        let layer = Linear::new(&w, &b).unwrap();
        let ours = layer.forward(x.as_tensor()).unwrap();
        let expected = x
            .as_tensor()
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_abs_diff(&ours, &expected) < 1e-5);
        let upstream = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let grad = |y: &Tensor| input_gradient(&x, y, &upstream);
        assert!(max_abs_diff(&grad(&ours), &grad(&expected)) < 1e-5);
    }

    #[test]
    fn the_fused_epilogue_is_gelu_then_the_residual() {
        let dev = Device::Cpu;
        // 7 rows: blocks of rows split unevenly over the threads.
        let x = Tensor::randn(0f32, 1.0, (7, 3), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let layer = Linear::new(&w, &b).unwrap();
        let plain = layer.forward(&x).unwrap();
        let fused = layer.forward_fused(&x, Some(&residual), true).unwrap();
        let expected = (plain.gelu_erf().unwrap() + &residual).unwrap();
        assert!(max_abs_diff(&fused, &expected) < 1e-5);
        let bias_only = layer.forward_fused(&x, None, false).unwrap();
        assert!(max_abs_diff(&bias_only, &plain) < 1e-6);
        let wrong = Tensor::zeros((6, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(layer.forward_fused(&x, Some(&wrong), false).is_err());
    }
}
