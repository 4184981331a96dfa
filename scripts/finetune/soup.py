#!/usr/bin/env python3
"""Averages LoRA adapters trained from the same encoder with different seeds
("model soup"): the mean of the deltas B_i @ A_i is itself a low-rank delta,
[B_1 ... B_k] / k @ [A_1; ...; A_k], of rank k * r, so the soup is exact and
loads like any adapter.

    python3 soup.py --out soup.safetensors a.safetensors b.safetensors ...
"""

import argparse

import numpy as np
from safetensors.numpy import load_file, save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapters", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--float16", action="store_true", help="store the factors as float16 (half the size)")
    args = ap.parse_args()
    loaded = [load_file(p) for p in args.adapters]
    names = sorted(loaded[0])
    if any(sorted(a) != names for a in loaded):
        raise SystemExit("error: the adapters adapt different layers")
    k = len(loaded)
    dtype = np.float16 if args.float16 else np.float32
    out = {}
    for name in names:
        if name.endswith(".lora_a"):
            out[name] = np.concatenate([a[name] for a in loaded], axis=0).astype(dtype)
        else:
            out[name] = (np.concatenate([a[name] for a in loaded], axis=1) / k).astype(dtype)
    save_file(out, args.out, metadata={"soup_of": str(k)})


if __name__ == "__main__":
    main()
