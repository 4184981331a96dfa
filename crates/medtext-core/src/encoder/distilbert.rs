//! DistilBERT encoders: config and tensor names; the forward pass is the
//! shared [`TransformerEncoder`].

use std::path::Path;

use serde::Deserialize;

use super::transformer::{Activation, Dimensions, LayerNames, TransformerEncoder, WeightNames};
use crate::{Error, Result};

/// The fields of a DistilBERT `config.json` that shape the model.
#[derive(Deserialize)]
struct Config {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "gelu")]
    activation: String,
    max_position_embeddings: usize,
}

fn gelu() -> String {
    "gelu".into()
}

/// DistilBERT's LayerNorms use PyTorch's default epsilon, fixed in its code.
const LAYER_NORM_EPS: f64 = 1e-12;

const NAMES: WeightNames = WeightNames {
    word_embeddings: "embeddings.word_embeddings.weight",
    position_embeddings: "embeddings.position_embeddings.weight",
    token_type_embeddings: None,
    embeddings_norm: "embeddings.LayerNorm",
    layers: "transformer.layer",
    layer: LayerNames {
        query: "attention.q_lin",
        key: "attention.k_lin",
        value: "attention.v_lin",
        attention_output: "attention.out_lin",
        attention_norm: "sa_layer_norm",
        intermediate: "ffn.lin1",
        output: "ffn.lin2",
        output_norm: "output_layer_norm",
    },
};

/// Loads `config.json` and `model.safetensors` from `dir`; tensor names may
/// carry a `distilbert.` prefix (Hugging Face checkpoints) or not.
pub fn load(dir: &Path, adapter: Option<&Path>) -> Result<TransformerEncoder> {
    let config_path = dir.join("config.json");
    let text = crate::pack::manifest::read_json_file(&config_path)?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| Error::pack(&config_path, format!("not a DistilBERT config: {e}")))?;
    let dims = Dimensions {
        hidden: config.dim,
        layers: config.n_layers,
        heads: config.n_heads,
        intermediate: config.hidden_dim,
        max_positions: config.max_position_embeddings,
        layer_norm_eps: LAYER_NORM_EPS,
        activation: Activation::from_config_name(&config.activation, &config_path)?,
    };
    TransformerEncoder::load(
        &dir.join("model.safetensors"),
        adapter,
        "distilbert",
        &NAMES,
        dims,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use crate::encoder::Encoder;

    use super::*;
    use crate::encoder::tests::{
        assert_both_passes_agree, assert_padding_is_ignored, insert_layer_norm,
    };

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
        let enc = load(dir.path(), None).unwrap();
        assert_eq!((enc.hidden_size(), enc.max_positions()), (8, 64));
        assert_padding_is_ignored(&enc);
        assert_both_passes_agree(&enc);
    }
}
