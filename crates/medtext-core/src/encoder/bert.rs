//! BERT-family encoders (BERT, MiniLM): config and tensor names; the forward
//! pass is the shared [`TransformerEncoder`].

use std::path::Path;

use serde::Deserialize;

use super::transformer::{Activation, Dimensions, LayerNames, TransformerEncoder, WeightNames};
use crate::{Error, Result};

/// The fields of a BERT `config.json` that shape the model.
#[derive(Deserialize)]
struct Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn gelu() -> String {
    "gelu".into()
}

fn default_eps() -> f64 {
    1e-12
}

const NAMES: WeightNames = WeightNames {
    word_embeddings: "embeddings.word_embeddings.weight",
    position_embeddings: "embeddings.position_embeddings.weight",
    token_type_embeddings: Some("embeddings.token_type_embeddings.weight"),
    embeddings_norm: "embeddings.LayerNorm",
    layers: "encoder.layer",
    layer: LayerNames {
        query: "attention.self.query",
        key: "attention.self.key",
        value: "attention.self.value",
        attention_output: "attention.output.dense",
        attention_norm: "attention.output.LayerNorm",
        intermediate: "intermediate.dense",
        output: "output.dense",
        output_norm: "output.LayerNorm",
    },
};

/// Loads `config.json` and `model.safetensors` from `dir`. Tensor names may
/// carry a `bert.` prefix (Hugging Face checkpoints) or not (sentence
/// transformers exports such as MiniLM).
pub fn load(dir: &Path, adapter: Option<&Path>) -> Result<TransformerEncoder> {
    let config_path = dir.join("config.json");
    let text = crate::pack::manifest::read_json_file(&config_path)?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| Error::pack(&config_path, format!("not a BERT config: {e}")))?;
    if let Some(kind) = config.position_embedding_type.as_deref() {
        if kind != "absolute" {
            return Err(Error::pack(
                &config_path,
                format!("position_embedding_type '{kind}' is not supported (only 'absolute')"),
            ));
        }
    }
    let dims = Dimensions {
        hidden: config.hidden_size,
        layers: config.num_hidden_layers,
        heads: config.num_attention_heads,
        intermediate: config.intermediate_size,
        max_positions: config.max_position_embeddings,
        layer_norm_eps: config.layer_norm_eps,
        activation: Activation::from_config_name(&config.hidden_act, &config_path)?,
    };
    TransformerEncoder::load(
        &dir.join("model.safetensors"),
        adapter,
        "bert",
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

    /// A tiny random BERT (2 layers, hidden 8) written as `config.json` +
    /// `model.safetensors` into `dir`, with names as in sentence-transformers
    /// exports (no `bert.` prefix).
    pub(crate) fn write_tiny_bert(dir: &Path, vocab_size: usize) {
        let hidden = 8;
        let config = serde_json::json!({
            "vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0, "max_position_embeddings": 64, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "model_type": "bert"
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let dev = Device::Cpu;
        let rand = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
        let mut t: HashMap<String, Tensor> = HashMap::new();
        t.insert(
            "embeddings.word_embeddings.weight".into(),
            rand(&[vocab_size, hidden]),
        );
        t.insert(
            "embeddings.position_embeddings.weight".into(),
            rand(&[64, hidden]),
        );
        t.insert(
            "embeddings.token_type_embeddings.weight".into(),
            rand(&[2, hidden]),
        );
        insert_layer_norm(&mut t, "embeddings.LayerNorm", hidden);
        for l in 0..2 {
            let p = format!("encoder.layer.{l}");
            for (name, out, inp) in [
                ("attention.self.query", hidden, hidden),
                ("attention.self.key", hidden, hidden),
                ("attention.self.value", hidden, hidden),
                ("attention.output.dense", hidden, hidden),
                ("intermediate.dense", 16, hidden),
                ("output.dense", hidden, 16),
            ] {
                t.insert(format!("{p}.{name}.weight"), rand(&[out, inp]));
                t.insert(format!("{p}.{name}.bias"), rand(&[out]));
            }
            insert_layer_norm(&mut t, &format!("{p}.attention.output.LayerNorm"), hidden);
            insert_layer_norm(&mut t, &format!("{p}.output.LayerNorm"), hidden);
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    }

    #[test]
    fn tiny_bert_loads_and_ignores_padding() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 14);
        let enc = load(dir.path(), None).unwrap();
        assert_eq!((enc.hidden_size(), enc.max_positions()), (8, 64));
        assert_padding_is_ignored(&enc);
        assert_both_passes_agree(&enc);
    }

    #[test]
    fn weights_that_do_not_match_the_config_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 14);
        let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            cfg.replace("\"hidden_size\":8", "\"hidden_size\":12"),
        )
        .unwrap();
        let err = load(dir.path(), None).err().unwrap();
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    #[test]
    fn truncated_weights_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 14);
        let weights = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
        let err = load(dir.path(), None).err().unwrap();
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    #[test]
    fn an_unsupported_position_embedding_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 14);
        let config = dir.path().join("config.json");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "\"model_type\":\"bert\"",
            "\"model_type\":\"bert\",\"position_embedding_type\":\"relative_key\"",
        );
        std::fs::write(&config, text).unwrap();
        let err = load(dir.path(), None).err().unwrap();
        assert!(err.to_string().contains("relative_key"), "{err}");
    }
}
