#!/usr/bin/env python3
"""Candle (MedText) against PyTorch and ONNX Runtime on the same encoder and
the same token ids, side by side in one run.

Every engine runs all-MiniLM-L6-v2 with mean pooling and L2 normalisation on
the ids that `medtext bench` uses (`synthetic_window_seeded` in
crates/medtext-core/src/bench.rs, reproduced below), with the same thread
count, each in its own process so that its peak RSS is its own.

    python scripts/reference/compare_engines.py [--threads 2] [--iterations 30]
        [--medtext target/release/medtext]

Needs torch, transformers, onnx and onnxruntime from PyPI (see
scripts/reference/README.md) and a release build of the CLI
(`cargo build --release -p medtext-cli`). Prints a table and Candle's ratio
to each peer; nothing is asserted (figures, not tests).
"""

import argparse
import json
import multiprocessing as mp
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
MINILM = ROOT / "models" / "encoders" / "all-minilm-l6-v2"
LENGTHS = [32, 128, 256, 512]


def synthetic_window(length, seed=0):
    """The ids of `synthetic_window_seeded` in bench.rs."""
    body = [2000 + (i * 7919 + seed * 104_729) % 20_000 for i in range(max(length - 2, 0))]
    return [101] + body + [102]


def percentile(sorted_values, q):
    rank = min(max(int(-(-q * len(sorted_values) // 1)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def measure(run, iterations, rounds):
    """run(ids) -> pooled vectors for a batch of equal-length windows."""
    import numpy as np

    p50, p95 = {}, {}
    for length in LENGTHS:
        ids = np.array([synthetic_window(length)], dtype=np.int64)
        run(ids)
        times = []
        for _ in range(iterations):
            t = time.perf_counter()
            run(ids)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p50[str(length)] = percentile(times, 0.5)
        p95[str(length)] = percentile(times, 0.95)
    batch = np.array([synthetic_window(128, seed) for seed in range(32)], dtype=np.int64)
    run(batch)
    t = time.perf_counter()
    for _ in range(rounds):
        run(batch)
    per_s = 32 * rounds / (time.perf_counter() - t)
    return {"p50_ms": p50, "p95_ms": p95, "batch32x128_per_s": per_s}


def mean_pool(hidden, mask):
    import numpy as np

    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def pytorch_engine(args, queue):
    import torch
    from transformers import BertModel

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = BertModel.from_pretrained(str(MINILM), add_pooling_layer=False).eval()
    load_ms = (time.perf_counter() - started) * 1000

    def run(ids):
        with torch.inference_mode():
            t = torch.from_numpy(ids)
            mask = torch.ones_like(t)
            hidden = model(input_ids=t, attention_mask=mask).last_hidden_state
            return mean_pool(hidden.numpy(), mask.numpy())

    result = measure(run, args.iterations, args.rounds)
    result["load_ms"] = load_ms
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((f"PyTorch {torch.__version__.split('+')[0]}", result))


def export_onnx(path):
    import torch
    from transformers import BertModel

    class Encoder(torch.nn.Module):
        """Positional inputs in a fixed order, whatever transformers' signature."""

        def __init__(self):
            super().__init__()
            self.bert = BertModel.from_pretrained(str(MINILM), add_pooling_layer=False).eval()

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.tensor([synthetic_window(16)])
    torch.onnx.export(
        Encoder().eval(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "last_hidden_state"]},
        opset_version=17,
        dynamo=False,
    )


def onnx_engine(args, queue, path, label):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000

    def run(ids):
        mask = np.ones_like(ids)
        (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        return mean_pool(hidden, mask)

    result = measure(run, args.iterations, args.rounds)
    result["load_ms"] = load_ms
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((f"{label} (ORT {ort.__version__})", result))


def candle_engine(args):
    env = dict(os.environ, MEDTEXT_MODELS_DIR=str(ROOT / "models"))
    out = subprocess.run(
        [
            args.medtext,
            "--threads",
            str(args.threads),
            "bench",
            "--json",
            "--iterations",
            str(args.iterations),
            "--batch-rounds",
            str(args.rounds),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def in_subprocess(target, *extra):
    queue = mp.Queue()
    process = mp.Process(target=target, args=(*extra[:1], queue, *extra[1:]))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--medtext", default=str(ROOT / "target" / "release" / "medtext"))
    parser.add_argument("--skip-int8", action="store_true")
    args = parser.parse_args()
    if not (MINILM / "model.safetensors").exists():
        sys.exit("run models/fetch-encoder.sh first")
    if not pathlib.Path(args.medtext).exists():
        sys.exit(f"{args.medtext} not found: cargo build --release -p medtext-cli")

    rows = [("Candle (MedText)", candle_engine(args))]
    rows.append(in_subprocess(pytorch_engine, args))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = pathlib.Path(tmp) / "minilm.onnx"
        export_onnx(fp32)
        rows.append(in_subprocess(onnx_engine, args, fp32, "ONNX Runtime FP32"))
        if not args.skip_int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            int8 = pathlib.Path(tmp) / "minilm-int8.onnx"
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
            rows.append(in_subprocess(onnx_engine, args, int8, "ONNX Runtime INT8 dynamic"))

    print(f"all-MiniLM-L6-v2, mean pooling, {args.threads} threads, identical token ids, "
          f"{args.iterations} runs per length")
    header = ["engine"] + [f"p50/p95 {n}" for n in LENGTHS] + ["batch32x128/s", "load ms", "RSS MB"]
    print(" | ".join(header))
    for name, r in rows:
        cells = [name]
        cells += [f"{r['p50_ms'][str(n)]:.1f}/{r['p95_ms'][str(n)]:.1f}" for n in LENGTHS]
        cells += [f"{r['batch32x128_per_s']:.1f}", f"{r['load_ms']:.0f}", f"{r['peak_rss_mb'] or 0:.0f}"]
        print(" | ".join(cells))
    candle = rows[0][1]
    print("\nCandle relative to each peer (>1 means Candle is better):")
    for name, r in rows[1:]:
        ratios = [f"p95 {n}: {r['p95_ms'][str(n)] / candle['p95_ms'][str(n)]:.2f}x" for n in LENGTHS]
        throughput = candle["batch32x128_per_s"] / r["batch32x128_per_s"]
        print(f"  vs {name}: " + ", ".join(ratios) + f", batch throughput {throughput:.2f}x")


if __name__ == "__main__":
    main()
