//! Classification heads: small layers on top of the pooled sentence vector,
//! loaded from safetensors files in a model pack.

use std::path::Path;

use candle_core::{Device, Tensor, D};

use crate::{Error, Result};

/// A linear head: `logits = x · Wᵀ + b`, then a temperature-scaled softmax.
///
/// The file holds `weight` `[labels, hidden]` and `bias` `[labels]` (f32), the
/// layout of `torch.nn.Linear` and `candle_nn::Linear`.
pub struct LinearHead {
    weight: Tensor,
    bias: Tensor,
}

impl LinearHead {
    /// Loads the head and checks it fits an encoder of width `hidden` and a list
    /// of `labels` labels, so a mismatched pack is refused with the file named.
    pub fn load(path: &Path, hidden: usize, labels: usize) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::pack(path, format!("cannot read the head: {e}")))?;
        let get = |name: &str| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::pack(path, format!("the head has no '{name}' tensor")))
        };
        let weight = get("weight")?;
        let bias = get("bias")?;
        if weight.dims() != [labels, hidden] || bias.dims() != [labels] {
            return Err(Error::pack(
                path,
                format!(
                    "head shapes weight {:?} / bias {:?} do not fit {labels} labels on a {hidden}-wide encoder",
                    weight.dims(),
                    bias.dims()
                ),
            ));
        }
        Ok(Self {
            weight: weight.to_dtype(candle_core::DType::F32)?,
            bias: bias.to_dtype(candle_core::DType::F32)?,
        })
    }

    /// `pooled` is `[batch, hidden]`; returns probabilities `[batch, labels]`.
    pub fn probabilities(&self, pooled: &Tensor, temperature: f64) -> Result<Tensor> {
        let logits = pooled
            .matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?;
        let scaled = (logits / temperature)?;
        Ok(candle_nn::ops::softmax(&scaled, D::Minus1)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    pub(crate) fn write_head(path: &Path, weight: &[Vec<f32>], bias: &[f32]) {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "weight".to_string(),
            Tensor::new(weight.to_vec(), &dev).unwrap(),
        );
        t.insert("bias".to_string(), Tensor::new(bias, &dev).unwrap());
        candle_core::safetensors::save(&t, path).unwrap();
    }

    #[test]
    fn probabilities_follow_the_weights_and_sum_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        write_head(
            &path,
            &[vec![1., 0.], vec![0., 1.], vec![0., 0.]],
            &[0., 0., 0.5],
        );
        let head = LinearHead::load(&path, 2, 3).unwrap();
        let x = Tensor::new(&[[2f32, 0.]], &Device::Cpu).unwrap();
        let p = head
            .probabilities(&x, 1.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // logits (2, 0, 0.5)
        let z = [2f32.exp(), 1.0, 0.5f32.exp()];
        let sum: f32 = z.iter().sum();
        for (a, b) in p[0].iter().zip(z.iter().map(|v| v / sum)) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        // A higher temperature flattens the distribution.
        let flat = head
            .probabilities(&x, 10.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(flat[0][0] < p[0][0]);
    }

    #[test]
    fn a_head_for_the_wrong_label_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        write_head(&path, &[vec![1., 0.], vec![0., 1.]], &[0., 0.]);
        let err = LinearHead::load(&path, 2, 3).err().unwrap();
        assert!(err.to_string().contains("head.safetensors"), "{err}");
        assert!(err.to_string().contains("3 labels"), "{err}");
    }

    #[test]
    fn a_truncated_head_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        write_head(&path, &[vec![1., 0.], vec![0., 1.]], &[0., 0.]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(LinearHead::load(&path, 2, 2).is_err());
    }
}
