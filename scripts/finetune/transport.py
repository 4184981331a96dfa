#!/usr/bin/env python3
"""Carries the encoder to a GPU machine whose upload limit (64 MiB) is below
its size (87 MB), and rebuilds it there.

    python3 transport.py pack ENCODER_DIR OUT.safetensors SPLIT.csv[.gz]...
    python3 transport.py unpack PACKED.safetensors ENCODER_DIR OUT_DIR

`pack` stores every weight as float16 and keeps only the word-embedding rows
that the splits' texts use (7,392 of 30,522 for ICD-10-CM); `unpack` writes a
float32 `model.safetensors` with the other rows zero, beside the encoder's
`config.json` and `tokenizer.json`. Fine-tuning on the split's texts never
reads the missing rows. The float16 rounding moves each weight by at most
1 part in 2,000; the session-7 adapters were trained on such a copy, and
MedText measures them on the original float32 encoder.
"""

import csv
import gzip
import os
import shutil
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

WORDS = "embeddings.word_embeddings.weight"


def pack(encoder, out, *splits):
    tok = Tokenizer.from_file(f"{encoder}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    used = {tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]")}
    for path in splits:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        for encoding in tok.encode_batch(texts, add_special_tokens=False):
            used.update(encoding.ids)
    weights = load_file(f"{encoder}/model.safetensors")
    words = weights.pop(WORDS)
    rows = np.array(sorted(used), dtype=np.int64)
    packed = {k: v.astype(np.float16) for k, v in weights.items()}
    packed["used_rows"] = rows
    packed["used_embeddings"] = words[rows].astype(np.float16)
    save_file(packed, out, metadata={"vocab": str(words.shape[0])})
    print(f"{len(rows)} of {words.shape[0]} word embeddings -> {out}")


def unpack(packed_path, encoder, out_dir):
    vocab = int(safe_open(packed_path, "np").metadata()["vocab"])
    packed = load_file(packed_path)
    rows, used = packed.pop("used_rows"), packed.pop("used_embeddings")
    words = np.zeros((vocab, used.shape[1]), np.float32)
    words[rows] = used
    weights = {k: v.astype(np.float32) for k, v in packed.items()}
    weights[WORDS] = words
    os.makedirs(out_dir, exist_ok=True)
    save_file(weights, f"{out_dir}/model.safetensors")
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(f"{encoder}/{name}", f"{out_dir}/{name}")
    print(f"encoder -> {out_dir}")


if __name__ == "__main__":
    commands = {"pack": pack, "unpack": unpack}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
