//! Low-rank deltas (LoRA) that a pack adds to its shared encoder's weights.
//!
//! Fine-tuning the encoder pays (see the ICD pack's card), but a fine-tuned
//! copy of all-MiniLM-L6-v2 would be 90 MB of weights to ship, verify and
//! keep apart from the registry's. A delta of rank r for a `[out, in]`
//! weight is two small matrices, `lora_b` `[out, r]` and `lora_a` `[r, in]`,
//! a few megabytes for the whole encoder: it travels inside the pack, is
//! hashed in its manifest like a head, and is added once, at load, so the
//! forward pass costs the same as without it.
//!
//! File format: safetensors with `<linear>.lora_a` and `<linear>.lora_b` for
//! each adapted linear layer, named as in the encoder without the
//! checkpoint's `bert.` / `distilbert.` prefix (`encoder.layer.0.attention.
//! self.query`); any scale is already folded into `lora_b`.
//! `scripts/finetune/lora.py` writes them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// The encoder weights in `weights` with the deltas in `adapter` added.
pub fn adapted_weights(weights: &Path, adapter: &Path) -> Result<VarBuilder<'static>> {
    let mut base = candle_core::safetensors::load(weights, &Device::Cpu)
        .map_err(|e| Error::pack(weights, format!("cannot read the weights: {e}")))?;
    let deltas = candle_core::safetensors::load(adapter, &Device::Cpu)
        .map_err(|e| Error::pack(adapter, format!("cannot read the adapter: {e}")))?;
    apply(&mut base, deltas).map_err(|problem| Error::pack(adapter, problem))?;
    Ok(VarBuilder::from_tensors(base, DType::F32, &Device::Cpu))
}

/// Adds each `lora_b @ lora_a` in `deltas` to the weight it names in `base`;
/// every tensor of `deltas` must be used, with matching shapes.
fn apply(
    base: &mut HashMap<String, Tensor>,
    mut deltas: HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    let mut layers: Vec<String> = deltas
        .keys()
        .filter_map(|k| k.strip_suffix(".lora_a").map(str::to_string))
        .collect();
    layers.sort_unstable();
    if layers.is_empty() {
        return Err("the adapter has no `<layer>.lora_a` tensors".into());
    }
    for layer in layers {
        let missing = |part: &str| format!("{layer}.lora_{part} is missing");
        let a = deltas
            .remove(&format!("{layer}.lora_a"))
            .ok_or_else(|| missing("a"))?;
        let b = deltas
            .remove(&format!("{layer}.lora_b"))
            .ok_or_else(|| missing("b"))?;
        let weight_name = format!("{layer}.weight");
        let mut matches = base
            .keys()
            .filter(|k| **k == weight_name || k.ends_with(&format!(".{weight_name}")))
            .cloned();
        let (Some(key), None) = (matches.next(), matches.next()) else {
            return Err(format!("{layer} is not one linear layer of this encoder"));
        };
        let weight = &base[&key];
        let shape_error = || {
            format!(
                "{layer}: lora_b {:?} @ lora_a {:?} does not make the weight's {:?}",
                b.dims(),
                a.dims(),
                weight.dims()
            )
        };
        let (out, input) = weight.dims2().map_err(|_| shape_error())?;
        let (a_rank, a_in) = a.dims2().map_err(|_| shape_error())?;
        let (b_out, b_rank) = b.dims2().map_err(|_| shape_error())?;
        if a_rank != b_rank || a_in != input || b_out != out {
            return Err(shape_error());
        }
        let delta = b
            .to_dtype(DType::F32)
            .and_then(|b| b.matmul(&a.to_dtype(DType::F32)?))
            .map_err(|e| format!("{layer}: {e}"))?;
        if !delta
            .abs()
            .and_then(|d| d.max_all())
            .and_then(|m| m.to_scalar::<f32>())
            .is_ok_and(f32::is_finite)
        {
            return Err(format!("{layer}: the delta is not finite"));
        }
        let adapted = weight
            .to_dtype(DType::F32)
            .and_then(|w| w + delta)
            .map_err(|e| format!("{layer}: {e}"))?;
        base.insert(key, adapted);
    }
    if let Some(extra) = deltas.keys().min() {
        return Err(format!(
            "{extra} is not a `<layer>.lora_a` / `<layer>.lora_b` pair"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    fn base() -> HashMap<String, Tensor> {
        HashMap::from([
            (
                "bert.encoder.layer.0.attention.self.query.weight".to_string(),
                t(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0]]),
            ),
            (
                "bert.encoder.layer.0.attention.self.query.bias".to_string(),
                t(&[&[0.5, 0.5]]),
            ),
        ])
    }

    #[test]
    fn the_delta_b_times_a_is_added_to_the_named_weight_whatever_the_prefix() {
        let mut weights = base();
        let deltas = HashMap::from([
            (
                "encoder.layer.0.attention.self.query.lora_a".to_string(),
                t(&[&[1.0, 2.0, 3.0]]),
            ),
            (
                "encoder.layer.0.attention.self.query.lora_b".to_string(),
                t(&[&[1.0], &[-1.0]]),
            ),
        ]);
        apply(&mut weights, deltas).unwrap();
        let w = weights["bert.encoder.layer.0.attention.self.query.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(w, vec![vec![2.0, 2.0, 3.0], vec![-1.0, -1.0, -3.0]]);
        // Biases are not touched.
        let b = weights["bert.encoder.layer.0.attention.self.query.bias"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(b, vec![vec![0.5, 0.5]]);
    }

    #[test]
    fn broken_adapters_are_refused_with_the_tensor_named() {
        let cases: Vec<(Vec<(&str, Tensor)>, &str)> = vec![
            (vec![], "no `<layer>.lora_a`"),
            (
                vec![(
                    "encoder.layer.0.attention.self.query.lora_a",
                    t(&[&[1.0, 2.0, 3.0]]),
                )],
                "query.lora_b is missing",
            ),
            (
                vec![
                    (
                        "encoder.layer.9.attention.self.query.lora_a",
                        t(&[&[1.0, 2.0, 3.0]]),
                    ),
                    (
                        "encoder.layer.9.attention.self.query.lora_b",
                        t(&[&[1.0], &[1.0]]),
                    ),
                ],
                "layer.9.attention.self.query is not one linear layer",
            ),
            (
                vec![
                    (
                        "encoder.layer.0.attention.self.query.lora_a",
                        t(&[&[1.0, 2.0]]),
                    ),
                    (
                        "encoder.layer.0.attention.self.query.lora_b",
                        t(&[&[1.0], &[1.0]]),
                    ),
                ],
                "does not make the weight's [2, 3]",
            ),
            (
                vec![
                    (
                        "encoder.layer.0.attention.self.query.lora_a",
                        t(&[&[f32::NAN, 0.0, 0.0]]),
                    ),
                    (
                        "encoder.layer.0.attention.self.query.lora_b",
                        t(&[&[1.0], &[1.0]]),
                    ),
                ],
                "not finite",
            ),
            (
                vec![
                    (
                        "encoder.layer.0.attention.self.query.lora_a",
                        t(&[&[1.0, 2.0, 3.0]]),
                    ),
                    (
                        "encoder.layer.0.attention.self.query.lora_b",
                        t(&[&[1.0], &[1.0]]),
                    ),
                    ("encoder.layer.0.attention.self.query.lora_c", t(&[&[1.0]])),
                ],
                "lora_c is not a",
            ),
        ];
        for (tensors, expected) in cases {
            let deltas = tensors
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let err = apply(&mut base(), deltas).unwrap_err();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }
}
