//! Sentence vectors from token vectors: mean pooling over real tokens, then L2
//! normalisation, as all-MiniLM-L6-v2 was trained.

use candle_core::{DType, Tensor, D};

use crate::Result;

/// `hidden` is `[batch, seq, dim]`, `attention_mask` `[batch, seq]` (1 for a real
/// token, 0 for padding). Returns unit vectors `[batch, dim]`.
pub fn mean_pool_normalized(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(mean.broadcast_div(&norms)?)
}

/// The vector of the first (`[CLS]`) token, `[batch, dim]`, as fine-tuned
/// `*ForSequenceClassification` checkpoints are trained to use.
pub fn cls_pool(hidden: &Tensor) -> Result<Tensor> {
    Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn cls_pooling_takes_the_first_token() {
        let hidden = Tensor::new(
            &[[[1f32, 2.], [3., 4.]], [[5., 6.], [7., 8.]]],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            cls_pool(&hidden).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![5., 6.]]
        );
    }

    #[test]
    fn padding_is_ignored_and_vectors_have_unit_length() {
        let dev = Device::Cpu;
        // Two sequences; the second has one padding position holding garbage.
        let hidden =
            Tensor::new(&[[[1f32, 0.], [3., 4.]], [[0., 2.], [100., 100.]]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1], [1, 0]], &dev).unwrap();
        let pooled = mean_pool_normalized(&hidden, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // mean of (1,0),(3,4) = (2,2) -> (0.7071, 0.7071); second = (0,2) -> (0,1)
        let expect = [[0.70710677f32, 0.70710677], [0., 1.]];
        for (row, exp) in pooled.iter().zip(expect) {
            for (a, b) in row.iter().zip(exp) {
                assert!((a - b).abs() < 1e-6, "{pooled:?}");
            }
        }
    }
}
