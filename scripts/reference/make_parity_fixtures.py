#!/usr/bin/env python3
"""Writes the numerical-parity fixtures that MedText's Candle encoders are
tested against (crates/medtext-core/tests/parity.rs).

For each supported architecture it builds a tiny random Hugging Face
`*ForSequenceClassification` model with PyTorch, runs it on fixed token ids
(with padding), and saves:
  <arch>/config.json, <arch>/model.safetensors   the model, as transformers saves it
  <arch>/reference.safetensors                    input_ids, attention_mask,
                                                  last_hidden_state, logits
For the real default encoder (all-MiniLM-L6-v2, when models/fetch-encoder.sh
has fetched it) it saves minilm/reference.safetensors: token ids of a few
clinical sentences and PyTorch's mean-pooled, L2-normalised embeddings.

Needs `torch` and `transformers` from PyPI (see scripts/reference/README.md);
PyTorch is kept out of CI, which only reads the committed fixtures.

    python scripts/reference/make_parity_fixtures.py
"""

import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "medtext-core" / "tests" / "fixtures" / "parity"
MINILM = ROOT / "models" / "encoders" / "all-minilm-l6-v2"

VOCAB = 120
# Three sequences; the second and third are padded, so the mask matters.
IDS = [
    [2, 17, 45, 99, 3, 61, 8, 77, 5, 31, 64, 3],
    [2, 12, 110, 7, 3, 0, 0, 0, 0, 0, 0, 0],
    [2, 90, 14, 15, 16, 18, 3, 0, 0, 0, 0, 0],
]
LABELS = {0: "first", 1: "second", 2: "third"}


def tiny_bert():
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_act="gelu",
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return BertForSequenceClassification(config), "bert"


def tiny_distilbert():
    config = DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=48,
        activation="gelu",
        max_position_embeddings=64,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    return DistilBertForSequenceClassification(config), "distilbert"


def randomise(model):
    """Default initialisation leaves LayerNorms at identity and biases at
    zero, which would hide mistakes in reading them: draw everything."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def write_tiny(make, name):
    torch.manual_seed(0)
    model, base_name = make()
    randomise(model)
    model.eval()
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    ids = torch.tensor(IDS, dtype=torch.long)
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = getattr(model, base_name)(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model(input_ids=ids, attention_mask=mask).logits
    save_file(
        {
            "input_ids": ids.to(torch.int64).contiguous(),
            "attention_mask": mask.to(torch.int64).contiguous(),
            "last_hidden_state": hidden.contiguous(),
            "logits": logits.contiguous(),
        },
        out / "reference.safetensors",
    )
    print(f"{name}: hidden {tuple(hidden.shape)}, logits {tuple(logits.shape)}")


SENTENCES = [
    "Pt c/o SOB, h/o CHF, BNP 1200.",
    "Chest pain radiating to the left arm; troponin elevated, NSTEMI suspected.",
    "Type 2 diabetes mellitus with diabetic nephropathy, HbA1c 9.1%.",
    "No acute distress.",
]


def write_minilm():
    if not (MINILM / "model.safetensors").exists():
        print("minilm: skipped (run models/fetch-encoder.sh first)")
        return
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encodings = [tokenizer.encode(s).ids for s in SENTENCES]
    longest = max(len(e) for e in encodings)
    ids = torch.tensor([e + [0] * (longest - len(e)) for e in encodings], dtype=torch.long)
    mask = torch.tensor(
        [[1] * len(e) + [0] * (longest - len(e)) for e in encodings], dtype=torch.long
    )
    model = BertModel.from_pretrained(str(MINILM), add_pooling_layer=False)
    model.eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    out = OUT / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "embeddings": pooled.contiguous(),
        },
        out / "reference.safetensors",
    )
    (out / "sentences.json").write_text(json.dumps(SENTENCES, indent=1) + "\n")
    print(f"minilm: embeddings {tuple(pooled.shape)}")


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    write_tiny(tiny_bert, "bert")
    write_tiny(tiny_distilbert, "distilbert")
    write_minilm()
