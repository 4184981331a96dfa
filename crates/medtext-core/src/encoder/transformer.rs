//! The post-LayerNorm transformer encoder that BERT, MiniLM and DistilBERT
//! share. The architecture modules only read their config and map their
//! tensor names onto [`TransformerWeights`]; the forward pass lives here once.
//!
//! Two ways through the same weights:
//! - [`TransformerEncoder::forward`], the fast path for classification: fused
//!   QKV projection, the fused attention kernel, Candle's fused LayerNorm;
//! - [`TransformerEncoder::forward_from_word_embeddings`], written with plain
//!   tensor ops that all have gradients, so evidence can differentiate the
//!   prediction with respect to each input token's embedding. The two are
//!   tested against each other.

use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::attention::{fused_attention, key_bias};
use super::linear::Linear;
use super::norm::LayerNorm;
use super::Encoder;
use crate::{Error, Result};

/// The feed-forward activation named in a model's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`erf`), what BERT's and DistilBERT's `"gelu"` means.
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn from_config_name(name: &str, config: &Path) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(Error::pack(
                config,
                format!("activation '{other}' is not supported (gelu, gelu_new, relu are)"),
            )),
        }
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
        }
    }
}

/// The sizes every architecture reduces to.
#[derive(Debug, Clone)]
pub struct Dimensions {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

/// Where one architecture keeps each tensor, relative to a layer's prefix.
pub struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

/// Where one architecture keeps its embeddings and layers.
pub struct WeightNames {
    pub word_embeddings: &'static str,
    pub position_embeddings: &'static str,
    /// BERT adds token type 0 to every token; DistilBERT has none.
    pub token_type_embeddings: Option<&'static str>,
    pub embeddings_norm: &'static str,
    /// The prefix of layer `i` is this followed by `.{i}`.
    pub layers: &'static str,
    pub layer: LayerNames,
}

/// Loads `{name}.weight` and `{name}.bias` for each name, concatenated
/// along the outputs so that several projections (Q, K, V) are one multiply.
fn load_linear(vb: &VarBuilder, names: &[&str], inputs: usize) -> candle_core::Result<Linear> {
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for name in names {
        let vb = vb.pp(*name);
        let w = vb.get_unchecked_dtype("weight", DType::F32)?;
        if w.dims().len() != 2 || w.dim(1)? != inputs {
            candle_core::bail!("{name}.weight has shape {:?}", w.dims());
        }
        biases.push(vb.get(w.dim(0)?, "bias")?);
        weights.push(w);
    }
    Linear::new(&Tensor::cat(&weights, 0)?, &Tensor::cat(&biases, 0)?)
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> candle_core::Result<Self> {
        let vb = vb.pp(name);
        // Old checkpoints call them gamma and beta.
        let (weight, bias) = match vb.get(dim, "weight") {
            Ok(weight) => (weight, vb.get(dim, "bias")?),
            Err(_) => (vb.get(dim, "gamma")?, vb.get(dim, "beta")?),
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    fn fast(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }

    /// Our own op: its backward pass keeps only the input (see `norm.rs`).
    fn differentiable(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        LayerNorm::new(self.weight.clone(), self.bias.clone(), self.eps).forward(x)
    }
}

struct Layer {
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// Which implementation of attention and LayerNorm a pass uses.
#[derive(Clone, Copy)]
enum Pass {
    Fast,
    Differentiable,
}

pub struct TransformerEncoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type: Option<Tensor>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    dims: Dimensions,
}

impl TransformerEncoder {
    /// Loads the weights in `weights` (a `model.safetensors` the pack verified),
    /// refusing any tensor whose shape does not match `dims`, with the file
    /// named. Names may carry `model_prefix` (`bert.`, `distilbert.`: Hugging
    /// Face checkpoints) or not (sentence-transformers exports). `adapter`:
    /// low-rank deltas to add to the weights (see [`super::adapter`]).
    pub fn load(
        weights: &Path,
        adapter: Option<&Path>,
        model_prefix: &str,
        names: &WeightNames,
        dims: Dimensions,
    ) -> Result<Self> {
        let vb = super::map_weights(weights, adapter)?;
        let prefixed = format!("{model_prefix}.{}", names.word_embeddings);
        let vb = if vb.contains_tensor(&prefixed) {
            vb.pp(model_prefix)
        } else {
            vb
        };
        Self::from_var_builder(&vb, names, dims)
            .map_err(|e| Error::pack(weights, format!("weights do not match config.json: {e}")))
    }

    fn from_var_builder(
        vb: &VarBuilder,
        names: &WeightNames,
        dims: Dimensions,
    ) -> candle_core::Result<Self> {
        let h = dims.hidden;
        if dims.heads == 0 || !h.is_multiple_of(dims.heads) {
            candle_core::bail!("hidden size {h} does not split into {} heads", dims.heads);
        }
        let word_embeddings = vb.get_unchecked_dtype(names.word_embeddings, DType::F32)?;
        if word_embeddings.dims().len() != 2 || word_embeddings.dim(1)? != h {
            candle_core::bail!(
                "{} has shape {:?}, not [vocab, {h}]",
                names.word_embeddings,
                word_embeddings.dims()
            );
        }
        let position_embeddings = vb.get((dims.max_positions, h), names.position_embeddings)?;
        let token_type = match names.token_type_embeddings {
            Some(name) => {
                let table = vb.get_unchecked_dtype(name, DType::F32)?;
                if table.dims().len() != 2 || table.dim(1)? != h {
                    candle_core::bail!("{name} has shape {:?}", table.dims());
                }
                Some(table.get(0)?)
            }
            None => None,
        };
        let embeddings_norm = Norm::load(vb, names.embeddings_norm, h, dims.layer_norm_eps)?;
        let n = &names.layer;
        let layers = (0..dims.layers)
            .map(|i| {
                let vb = vb.pp(format!("{}.{i}", names.layers));
                Ok(Layer {
                    qkv: load_linear(&vb, &[n.query, n.key, n.value], h)?,
                    attention_output: load_linear(&vb, &[n.attention_output], h)?,
                    attention_norm: Norm::load(&vb, n.attention_norm, h, dims.layer_norm_eps)?,
                    intermediate: load_linear(&vb, &[n.intermediate], h)?,
                    output: load_linear(&vb, &[n.output], dims.intermediate)?,
                    output_norm: Norm::load(&vb, n.output_norm, h, dims.layer_norm_eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (i, layer) in layers.iter().enumerate() {
            let shapes = [
                (layer.qkv.dims(), [h, 3 * h]),
                (layer.attention_output.dims(), [h, h]),
                (layer.intermediate.dims(), [h, dims.intermediate]),
                (layer.output.dims(), [dims.intermediate, h]),
            ];
            if shapes.iter().any(|(got, want)| *got != want) {
                candle_core::bail!("layer {i} does not have the configured sizes");
            }
        }
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type,
            embeddings_norm,
            layers,
            dims,
        })
    }

    fn check_length(&self, seq: usize) -> Result<()> {
        if seq > self.dims.max_positions {
            return Err(Error::ModelInput(format!(
                "a window of {seq} tokens exceeds the encoder's {} positions",
                self.dims.max_positions
            )));
        }
        Ok(())
    }

    fn run(&self, word: &Tensor, attention_mask: &Tensor, pass: Pass) -> Result<Tensor> {
        let (batch, seq, hidden) = word.dims3()?;
        self.check_length(seq)?;
        let positions = self.position_embeddings.narrow(0, 0, seq)?;
        let mut x = word.broadcast_add(&positions)?;
        if let Some(token_type) = &self.token_type {
            x = x.broadcast_add(token_type)?;
        }
        let norm = |n: &Norm, x: &Tensor| match pass {
            Pass::Fast => n.fast(x),
            Pass::Differentiable => n.differentiable(x),
        };
        let rows = batch * seq;
        let mut x = norm(&self.embeddings_norm, &x.reshape((rows, hidden))?)?;
        let bias = key_bias(attention_mask)?;
        // `act(x · W + b) + residual`: fused into the multiply on the fast
        // pass, as separate differentiable ops for evidence.
        let project = |linear: &Linear,
                       x: &Tensor,
                       residual: Option<&Tensor>,
                       gelu: bool|
         -> candle_core::Result<Tensor> {
            match pass {
                Pass::Fast => linear.forward_fused(x, residual, gelu),
                Pass::Differentiable => {
                    let mut y = linear.forward(x)?;
                    if gelu {
                        y = y.gelu_erf()?;
                    }
                    match residual {
                        Some(r) => y + r,
                        None => Ok(y),
                    }
                }
            }
        };
        let fuse_gelu = self.dims.activation == Activation::Gelu;
        for layer in &self.layers {
            let qkv = project(&layer.qkv, &x, None, false)?;
            let context = fused_attention(
                &qkv.reshape((batch, seq, 3 * hidden))?,
                &bias,
                self.dims.heads,
            )?;
            let context = context.reshape((rows, hidden))?;
            let attended = project(&layer.attention_output, &context, Some(&x), false)?;
            x = norm(&layer.attention_norm, &attended)?;
            let mut inner = project(&layer.intermediate, &x, None, fuse_gelu)?;
            if !fuse_gelu {
                inner = self.dims.activation.apply(&inner)?;
            }
            let out = project(&layer.output, &inner, Some(&x), false)?;
            x = norm(&layer.output_norm, &out)?;
        }
        Ok(x.reshape((batch, seq, hidden))?)
    }
}

impl Encoder for TransformerEncoder {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        crate::machine::runtime::pool()?.install(|| {
            let word = self.word_embeddings(input_ids)?;
            self.run(&word, attention_mask, Pass::Fast)
        })
    }

    fn word_embeddings(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let vocab = self.word_embeddings.dim(0)?;
        if input_ids.max_all()?.to_scalar::<u32>()? as usize >= vocab {
            return Err(Error::ModelInput(
                "a token id is outside the encoder's vocabulary (does tokenizer.json belong to this model?)"
                    .into(),
            ));
        }
        Ok(self
            .word_embeddings
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((batch, seq, self.dims.hidden))?)
    }

    fn forward_from_word_embeddings(
        &self,
        word: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        self.run(word, attention_mask, Pass::Differentiable)
    }

    fn hidden_size(&self) -> usize {
        self.dims.hidden
    }

    fn max_positions(&self) -> usize {
        self.dims.max_positions
    }
}
