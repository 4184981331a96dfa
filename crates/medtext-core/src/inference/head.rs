//! Classification heads: small layers on top of the pooled sentence vector,
//! loaded from safetensors files in a model pack.

use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, D};

use crate::pack::manifest::Architecture;
use crate::{Error, Result};

/// What every head does: pooled vectors `[batch, hidden]` in, logits
/// `[batch, labels]` out. Written with differentiable ops only, so evidence
/// can trace a prediction back through the head.
pub trait Head: Send + Sync {
    fn logits(&self, pooled: &Tensor) -> Result<Tensor>;
}

/// Calibrated probabilities: the soft-max of `logits / temperature`, the
/// temperature fitted on validation data when the head was made.
pub fn calibrated_probabilities(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(
        &(logits / temperature)?,
        D::Minus1,
    )?)
}

/// `y = x · Wᵀ + b`, the layout of `torch.nn.Linear` and `candle_nn::Linear`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// Reads `{prefix}weight` `[outputs, inputs]` and `{prefix}bias`
    /// `[outputs]`, refusing other shapes with the file named.
    fn load(
        tensors: &MmapedSafetensors,
        path: &Path,
        prefix: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<Self> {
        let get = |name: String| {
            tensors
                .load(&name, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|_| Error::pack(path, format!("the head has no readable '{name}' tensor")))
        };
        let weight = get(format!("{prefix}weight"))?;
        let bias = get(format!("{prefix}bias"))?;
        if weight.dims() != [outputs, inputs] || bias.dims() != [outputs] {
            return Err(Error::pack(
                path,
                format!(
                    "{prefix}weight {:?} / bias {:?} do not fit {outputs} outputs on {inputs} inputs ({outputs} labels on a {inputs}-wide encoder?)",
                    weight.dims(),
                    bias.dims()
                ),
            ));
        }
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

fn open(path: &Path) -> Result<MmapedSafetensors> {
    // SAFETY: read-only mapping of a file whose hash the pack verified.
    unsafe { MmapedSafetensors::new(path) }
        .map_err(|e| Error::pack(path, format!("cannot read the head: {e}")))
}

/// A linear head on the pooled vector: the file holds `weight` and `bias`.
pub struct LinearHead {
    layer: Dense,
}

impl LinearHead {
    /// Loads the head and checks it fits an encoder of width `hidden` and a list
    /// of `labels` labels, so a mismatched pack is refused with the file named.
    pub fn load(path: &Path, hidden: usize, labels: usize) -> Result<Self> {
        Ok(Self {
            layer: Dense::load(&open(path)?, path, "", hidden, labels)?,
        })
    }
}

impl Head for LinearHead {
    fn logits(&self, pooled: &Tensor) -> Result<Tensor> {
        self.layer.forward(pooled)
    }
}

/// A small MLP on the pooled vector: `hidden.weight`/`hidden.bias` (any
/// width), ReLU, then `output.weight`/`output.bias`.
pub struct MlpHead {
    hidden: Dense,
    output: Dense,
}

impl MlpHead {
    pub fn load(path: &Path, hidden: usize, labels: usize) -> Result<Self> {
        let tensors = open(path)?;
        let width = tensors
            .get("hidden.bias")
            .map_err(|_| Error::pack(path, "the MLP head has no 'hidden.bias' tensor"))?
            .shape()
            .first()
            .copied()
            .unwrap_or(0);
        Ok(Self {
            hidden: Dense::load(&tensors, path, "hidden.", hidden, width)?,
            output: Dense::load(&tensors, path, "output.", width, labels)?,
        })
    }
}

impl Head for MlpHead {
    fn logits(&self, pooled: &Tensor) -> Result<Tensor> {
        self.output.forward(&self.hidden.forward(pooled)?.relu()?)
    }
}

/// The head of a Hugging Face `BertForSequenceClassification` or
/// `DistilBertForSequenceClassification` checkpoint, read from the
/// checkpoint's own weights: a dense layer on the `[CLS]` vector (BERT's
/// pooler with tanh, DistilBERT's `pre_classifier` with ReLU), then
/// `classifier`.
pub struct SequenceClassificationHead {
    pre: Dense,
    architecture: Architecture,
    classifier: Dense,
}

impl SequenceClassificationHead {
    pub fn load(
        path: &Path,
        architecture: Architecture,
        hidden: usize,
        labels: usize,
    ) -> Result<Self> {
        let tensors = open(path)?;
        let pre_prefix = match architecture {
            Architecture::Bert if tensors.get("bert.pooler.dense.weight").is_ok() => {
                "bert.pooler.dense."
            }
            Architecture::Bert => "pooler.dense.",
            Architecture::Distilbert => "pre_classifier.",
        };
        Ok(Self {
            pre: Dense::load(&tensors, path, pre_prefix, hidden, hidden)?,
            architecture,
            classifier: Dense::load(&tensors, path, "classifier.", hidden, labels)?,
        })
    }
}

impl Head for SequenceClassificationHead {
    fn logits(&self, cls: &Tensor) -> Result<Tensor> {
        let pre = self.pre.forward(cls)?;
        let activated = match self.architecture {
            Architecture::Bert => pre.tanh()?,
            Architecture::Distilbert => pre.relu()?,
        };
        self.classifier.forward(&activated)
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
        let logits = head.logits(&x).unwrap();
        let p = calibrated_probabilities(&logits, 1.0)
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
        let flat = calibrated_probabilities(&logits, 10.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!(flat[0][0] < p[0][0]);
    }

    #[test]
    fn an_mlp_head_is_relu_between_its_two_layers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlp.safetensors");
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        // hidden = relu([x0 - x1, x1 - x0, x0 + x1]); logits = [h0 + h2, h1]
        t.insert(
            "hidden.weight".to_string(),
            Tensor::new(&[[1f32, -1.], [-1., 1.], [1., 1.]], &dev).unwrap(),
        );
        t.insert(
            "hidden.bias".to_string(),
            Tensor::zeros(3, DType::F32, &dev).unwrap(),
        );
        t.insert(
            "output.weight".to_string(),
            Tensor::new(&[[1f32, 0., 1.], [0., 1., 0.]], &dev).unwrap(),
        );
        t.insert(
            "output.bias".to_string(),
            Tensor::new(&[0f32, 0.5], &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, &path).unwrap();
        let head = MlpHead::load(&path, 2, 2).unwrap();
        let logits = head
            .logits(&Tensor::new(&[[3f32, 1.]], &dev).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(logits, vec![vec![2. + 4., 0.5]]);
        assert!(
            MlpHead::load(&path, 2, 3).is_err(),
            "3 labels on a 2-label head"
        );
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
