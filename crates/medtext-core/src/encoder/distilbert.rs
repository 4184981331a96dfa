//! DistilBERT encoders on Candle's CPU backend.

use std::path::Path;

use candle_core::Tensor;
use candle_transformers::models::distilbert::{Config, DistilBertModel};

use super::Encoder;
use crate::{Error, Result};

pub struct DistilBertEncoder {
    model: DistilBertModel,
    hidden_size: usize,
    max_positions: usize,
}

impl DistilBertEncoder {
    /// Loads `config.json` and `model.safetensors` from `dir`; tensor names may
    /// carry a `distilbert.` prefix (Hugging Face checkpoints) or not.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let not_distilbert = |e: serde_json::Error| {
            Error::pack(&config_path, format!("not a DistilBERT config: {e}"))
        };
        let config: Config = serde_json::from_str(&text).map_err(not_distilbert)?;
        // Candle keeps this field private; read it from the same file.
        #[derive(serde::Deserialize)]
        struct Positions {
            max_position_embeddings: usize,
        }
        let positions: Positions = serde_json::from_str(&text).map_err(not_distilbert)?;
        let weights = dir.join("model.safetensors");
        let vb = super::map_weights(&weights)?;
        let vb = if vb.contains_tensor("distilbert.embeddings.word_embeddings.weight") {
            vb.pp("distilbert")
        } else {
            vb
        };
        let model = DistilBertModel::load(vb, &config)
            .map_err(|e| Error::pack(&weights, format!("weights do not match config.json: {e}")))?;
        Ok(Self {
            model,
            hidden_size: config.dim,
            max_positions: positions.max_position_embeddings,
        })
    }
}

impl Encoder for DistilBertEncoder {
    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        // Candle's DistilBERT takes the inverse mask (1 = hidden), shaped to
        // broadcast over heads and query positions.
        let (batch, seq) = attention_mask.dims2()?;
        let hidden = attention_mask.eq(0u32)?.reshape((batch, 1, 1, seq))?;
        Ok(self.model.forward(input_ids, &hidden)?)
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::encoder::tests::{assert_padding_is_ignored, insert_layer_norm};

    /// A tiny random DistilBERT (2 layers, dim 8) with Hugging Face names
    /// (`distilbert.` prefix), written into `dir`.
    pub(crate) fn write_tiny_distilbert(dir: &Path, vocab_size: usize) {
        let dim = 8;
        let config = serde_json::json!({
            "vocab_size": vocab_size, "dim": dim, "n_layers": 2, "n_heads": 2, "hidden_dim": 16,
            "activation": "gelu", "max_position_embeddings": 64, "initializer_range": 0.02,
            "pad_token_id": 0, "model_type": "distilbert"
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let dev = Device::Cpu;
        let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
        let mut t: HashMap<String, Tensor> = HashMap::new();
        let p = "distilbert";
        t.insert(
            format!("{p}.embeddings.word_embeddings.weight"),
            rand(&[vocab_size, dim]),
        );
        t.insert(
            format!("{p}.embeddings.position_embeddings.weight"),
            rand(&[64, dim]),
        );
        insert_layer_norm(&mut t, &format!("{p}.embeddings.LayerNorm"), dim);
        for l in 0..2 {
            let layer = format!("{p}.transformer.layer.{l}");
            for (name, out, inp) in [
                ("attention.q_lin", dim, dim),
                ("attention.k_lin", dim, dim),
                ("attention.v_lin", dim, dim),
                ("attention.out_lin", dim, dim),
                ("ffn.lin1", 16, dim),
                ("ffn.lin2", dim, 16),
            ] {
                t.insert(format!("{layer}.{name}.weight"), rand(&[out, inp]));
                t.insert(format!("{layer}.{name}.bias"), rand(&[out]));
            }
            insert_layer_norm(&mut t, &format!("{layer}.sa_layer_norm"), dim);
            insert_layer_norm(&mut t, &format!("{layer}.output_layer_norm"), dim);
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    }

    #[test]
    fn tiny_distilbert_loads_and_ignores_padding() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_distilbert(dir.path(), 14);
        let enc = DistilBertEncoder::load(dir.path()).unwrap();
        assert_eq!((enc.hidden_size(), enc.max_positions()), (8, 64));
        assert_padding_is_ignored(&enc);
    }
}
