#!/usr/bin/env python3
"""Fine-tunes a pack's encoder with LoRA on the training part of a MedText
split, and writes the low-rank delta that MedText adds to the encoder's
weights when it loads the pack (`encoder.adapter` in the manifest).

Why a recipe outside MedText: fine-tuning a transformer wants a GPU and
PyTorch; classifying with the result does not. The split comes from
`medtext train --write-split`, so the encoder never sees the validation or
test part (for the ICD pack: whole held-out categories), and the figures
MedText measures afterwards stay honest. Several `--task` splits over the
same texts (chapter and block) are trained together, one head each.

The forward pass below is written out rather than taken from a library so
that it is, line for line, the one MedText runs (mean pooling over windows
of `--max-tokens` overlapping by a quarter, unit-length vectors).

    python3 lora.py --encoder models/encoders/all-minilm-l6-v2 \\
        --task chapter=split-chapter.csv --task block=split-block.csv \\
        --max-tokens 128 --rank 16 --epochs 4 --out adapter.safetensors

Needs torch, numpy, safetensors and tokenizers; seeded, and deterministic on
one machine (not bit-for-bit across GPUs).
"""

import argparse
import csv
import gzip
import json
import math
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

# The linear layers of each transformer layer that get a low-rank delta.
ADAPTED = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
PARTS = ("train", "validation", "test")


def read_split(path):
    """{text: (part, label)} from a `medtext train --write-split` CSV."""
    opener = gzip.open if path.endswith(".gz") else open
    rows = {}
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            rows[r["text"]] = (r["part"], r["label"])
    return rows


class Encoder(torch.nn.Module):
    """A BERT encoder from `config.json` and `model.safetensors`, frozen,
    with trainable low-rank deltas on the linear layers in ADAPTED."""

    def __init__(self, folder, rank, alpha, dropout, full, device):
        super().__init__()
        with open(f"{folder}/config.json") as f:
            cfg = json.load(f)
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        weights = load_file(f"{folder}/model.safetensors")
        weights = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        self.w = torch.nn.ParameterDict(
            {
                k.replace(".", "/"): torch.nn.Parameter(v, requires_grad=full)
                for k, v in weights.items()
            }
        )
        self.scale = alpha / rank if rank else 0.0
        self.dropout = dropout
        self.lora = torch.nn.ParameterDict()
        if rank:
            for i in range(self.layers):
                for name in ADAPTED:
                    key = f"encoder.layer.{i}.{name}"
                    out_dim, in_dim = self.weight(f"{key}.weight").shape
                    a = torch.empty(rank, in_dim)
                    torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                    self.lora[key.replace(".", "/") + "/a"] = torch.nn.Parameter(a)
                    self.lora[key.replace(".", "/") + "/b"] = torch.nn.Parameter(
                        torch.zeros(out_dim, rank)
                    )
        self.to(device)

    def merge(self, path):
        """Adds an adapter's deltas (`lora_b @ lora_a`) to the frozen weights,
        as MedText does when it loads a pack."""
        deltas = load_file(path)
        for name in {k.rsplit(".", 1)[0] for k in deltas}:
            w = self.weight(f"{name}.weight")
            w.data += (deltas[f"{name}.lora_b"].float() @ deltas[f"{name}.lora_a"].float()).to(w.device)

    def weight(self, name):
        return self.w[name.replace(".", "/")]

    def norm(self, x, name):
        try:
            w, b = self.weight(f"{name}.weight"), self.weight(f"{name}.bias")
        except KeyError:
            w, b = self.weight(f"{name}.gamma"), self.weight(f"{name}.beta")
        return F.layer_norm(x, (self.hidden,), w, b, self.eps)

    def linear(self, x, name):
        y = F.linear(x, self.weight(f"{name}.weight"), self.weight(f"{name}.bias"))
        key = name.replace(".", "/")
        if key + "/a" in self.lora:
            a, b = self.lora[key + "/a"], self.lora[key + "/b"]
            x = F.dropout(x, self.dropout, self.training)
            y = y + (x @ a.t() @ b.t()) * self.scale
        return y

    def forward(self, ids, mask):
        """Unit-length mean-pooled vectors `[batch, hidden]` of windows."""
        batch, length = ids.shape
        positions = torch.arange(length, device=ids.device)
        x = self.weight("embeddings.word_embeddings.weight")[ids]
        x = x + self.weight("embeddings.position_embeddings.weight")[positions]
        x = x + self.weight("embeddings.token_type_embeddings.weight")[0]
        x = self.norm(x, "embeddings.LayerNorm")
        d = self.hidden // self.heads
        keep = mask[:, None, None, :].bool()
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split_heads(t):
                return t.view(batch, length, self.heads, d).transpose(1, 2)

            q = split_heads(self.linear(x, p + "attention.self.query"))
            k = split_heads(self.linear(x, p + "attention.self.key"))
            v = split_heads(self.linear(x, p + "attention.self.value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            ctx = ctx.transpose(1, 2).reshape(batch, length, self.hidden)
            x = self.norm(x + self.linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = F.gelu(self.linear(x, p + "intermediate.dense"))
            x = self.norm(x + self.linear(inner, p + "output.dense"), p + "output.LayerNorm")
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def adapter(self):
        """The deltas as MedText reads them: `<linear>.lora_a` `[rank, in]`
        and `<linear>.lora_b` `[out, rank]`, the scale folded into B, so that
        the new weight is `weight + lora_b @ lora_a`."""
        out = {}
        for key, value in self.lora.items():
            name = key[: -len("/a")].replace("/", ".")
            if key.endswith("/a"):
                out[f"{name}.lora_a"] = value.detach().float().cpu().contiguous()
            else:
                out[f"{name}.lora_b"] = (value.detach().float() * self.scale).cpu().contiguous()
        return out


class Windows:
    """Token windows of each text, as MedText cuts them."""

    def __init__(self, tokenizer_path, max_tokens):
        self.tok = Tokenizer.from_file(tokenizer_path)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.cls = self.tok.token_to_id("[CLS]")
        self.sep = self.tok.token_to_id("[SEP]")
        self.body = max_tokens - 2
        self.step = self.body - self.body // 4

    def __call__(self, text):
        ids = self.tok.encode(text, add_special_tokens=False).ids
        windows, start = [], 0
        while True:
            end = min(start + self.body, len(ids))
            windows.append([self.cls] + ids[start:end] + [self.sep])
            if end == len(ids):
                return windows
            start += self.step


def embed(encoder, windows_of, texts, device, grad, pieces=1):
    """Unit vectors of `texts`: the normalised sum of their windows' vectors.
    With `pieces` > 1 the windows go through the encoder shortest first in
    that many pieces, each padded only to its own longest window: a window's
    vector does not depend on the padding, so only the cost changes."""
    flat, owner = [], []
    for i, t in enumerate(texts):
        for w in windows_of[t]:
            flat.append(w)
            owner.append(i)
    if pieces > 1:
        by_length = sorted(range(len(flat)), key=lambda r: len(flat[r]))
        flat, owner = [flat[r] for r in by_length], [owner[r] for r in by_length]
    size = math.ceil(len(flat) / max(1, pieces))
    pooled = []
    for s in range(0, len(flat), size):
        piece = flat[s : s + size]
        longest = max(len(w) for w in piece)
        ids = torch.zeros(len(piece), longest, dtype=torch.long)
        mask = torch.zeros(len(piece), longest, dtype=torch.long)
        for r, w in enumerate(piece):
            ids[r, : len(w)] = torch.tensor(w)
            mask[r, : len(w)] = 1
        with torch.set_grad_enabled(grad), torch.autocast(device.type, torch.bfloat16, enabled=grad):
            pooled.append(encoder(ids.to(device), mask.to(device)).float())
    pooled = torch.cat(pooled)
    sums = torch.zeros(len(texts), pooled.shape[1], device=device)
    sums = sums.index_add(0, torch.tensor(owner, device=device), pooled)
    return F.normalize(sums, dim=-1)


def embed_all(encoder, windows_of, texts, device, batch=512):
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(windows_of[texts[i]][0]))
    out = torch.zeros(len(texts), encoder.hidden, device=device)
    for s in range(0, len(order), batch):
        rows = order[s : s + batch]
        out[rows] = embed(encoder, windows_of, [texts[i] for i in rows], device, False)
    return out


def macro_f1(truth, predicted, n_labels):
    """Macro-F1 over the labels that are true or predicted (as MedText counts it)."""
    f1s = []
    for label in range(n_labels):
        tp = int(((predicted == label) & (truth == label)).sum())
        fp = int(((predicted == label) & (truth != label)).sum())
        fn = int(((predicted != label) & (truth == label)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def class_weights(counts, cap):
    """Inverse-frequency loss weight of each label, capped at `cap` times the
    median label's weight, as MedText's head trainer does (`train::class_weights`);
    `cap` 0 leaves them uncapped (how the 0.2.0 adapters were made). Labels
    without training rows weigh 0."""
    counts = np.asarray(counts, dtype=np.float64)
    inverse = counts.sum() / (len(counts) * np.maximum(counts, 1))
    if cap:
        inverse = np.minimum(inverse, np.sort(inverse)[len(inverse) // 2] * cap)
    return torch.tensor(np.where(counts > 0, inverse, 0.0), dtype=torch.float32)


def weighted_loss(logits, target, weight):
    """Cross-entropy weighted per example by its label's weight, as MedText's."""
    w = weight[target]
    return -(F.log_softmax(logits, -1).gather(1, target[:, None]).squeeze(1) * w).sum() / w.sum()


def probe(vectors, labels, parts, n_labels, seed, cap, batch=64, patience=15):
    """A linear head trained on the frozen vectors as MedText trains one
    (capped class weights, AdamW at 1e-2, mini-batches of 64, kept at its
    lowest weighted validation loss, stopped after 15 epochs without a better
    one): validation and test accuracy and macro-F1. The epoch of fine-tuning
    is chosen by this head's figure, so it must be the head that ships; a
    full-batch, uncapped probe measured 0.04 below MedText's head."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = vectors.device
    y = torch.tensor(labels, device=device)
    idx = {p: torch.tensor([i for i, q in enumerate(parts) if q == p], device=device) for p in PARTS}
    weight = class_weights(torch.bincount(y[idx["train"]], minlength=n_labels).cpu().numpy(), cap).to(device)
    head = torch.nn.Linear(vectors.shape[1], n_labels).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    train_x, train_y = vectors[idx["train"]], y[idx["train"]]
    val_x, val_y = vectors[idx["validation"]], y[idx["validation"]]
    best, best_state, best_epoch = float("inf"), None, 0
    for epoch in range(1, 301):
        order = torch.randperm(len(train_y), generator=generator).to(device)
        for s in range(0, len(order), batch):
            rows = order[s : s + batch]
            loss = weighted_loss(head(train_x[rows]), train_y[rows], weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = weighted_loss(head(val_x), val_y, weight).item()
        if val < best:
            best, best_state, best_epoch = val, {k: v.clone() for k, v in head.state_dict().items()}, epoch
        elif epoch - best_epoch >= patience:
            break
    head.load_state_dict(best_state)
    result = {}
    with torch.no_grad():
        for p in ("validation", "test"):
            pred = head(vectors[idx[p]]).argmax(1).cpu().numpy()
            truth = y[idx[p]].cpu().numpy()
            result[p] = {
                "accuracy": float((pred == truth).mean()),
                "macro_f1": macro_f1(truth, pred, n_labels),
                "n": int(len(truth)),
            }
    return result


def supervised_contrastive(vectors, labels, temperature, label_weight=None):
    """Supervised contrastive loss (Khosla et al., 2020) over a batch of unit
    vectors: each text is pulled towards the others with its label and pushed
    from the rest. Texts without a label (-1), or alone with theirs, are no
    anchors. With `label_weight`, each anchor counts as much as its label does
    in the weighted cross-entropy, so that, as there, large labels do not
    drown small ones (macro-F1 counts every label alike)."""
    keep = labels >= 0
    z, y = vectors[keep], labels[keep]
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~self_mask
    count = positive.sum(1)
    anchors = count > 0
    if not anchors.any():
        return vectors.sum() * 0
    mean_log_p = log_p.masked_fill(~positive, 0).sum(1)[anchors] / count[anchors]
    if label_weight is None:
        return -mean_log_p.mean()
    w = label_weight[y[anchors]]
    return -(mean_log_p * w).sum() / w.sum()


def save(args, tasks, history, best_epoch, best_adapter):
    """Writes the report and the adapter of the epoch kept so far."""
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "report")},
        "kept_epoch": best_epoch,
        "kept_because": f"highest validation macro-F1 of {tasks[0][0]}",
        "history": history,
    }
    if args.out and args.rank and not args.full:
        save_file(best_adapter, args.out, metadata={"rank": str(args.rank), "kept_epoch": str(best_epoch)})
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", required=True, help="folder with config.json, model.safetensors, tokenizer.json")
    ap.add_argument("--task", action="append", required=True, help="NAME=SPLIT.csv[.gz]; the first selects the epoch")
    ap.add_argument("--out", help="where to write the adapter (.safetensors)")
    ap.add_argument("--report", help="where to write the figures (JSON)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16, help="0: no adapter (with --full, or to measure the base)")
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--full", action="store_true", help="also train every weight (figures only: no adapter)")
    ap.add_argument("--probe", choices=("all", "first"), default="all", help="tasks measured by a linear probe after each epoch; 'first' skips the others (a task with thousands of labels is slow to probe on a CPU)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--head-lr", type=float, default=5e-3)
    ap.add_argument("--batch", type=int, default=64, help="texts per step")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--class-weight-cap", type=float, default=10.0, help="cap each label's loss weight at this many times the median label's, as MedText does (0: uncapped, as the 0.2.0 adapters were made)")
    ap.add_argument("--supcon", action="append", default=[], metavar="[TASK=]W", help="a supervised contrastive loss of weight W on TASK's labels (no TASK: the first task's); repeat for several tasks")
    ap.add_argument("--supcon-temperature", type=float, default=0.1)
    ap.add_argument("--supcon-weighting", choices=("none", "class"), default="none", help="'class': weigh each anchor of the contrastive loss by its label's (capped) class weight, as the cross-entropy does")
    ap.add_argument("--pieces", type=int, default=1, metavar="N", help="run each training batch through the encoder in N pieces of similar length, then take the losses over the whole batch: the same batches and the same loss, with less padding (on a CPU, an ICD epoch in 240 seconds instead of 330)")
    ap.add_argument("--probe-from", type=int, default=0, metavar="EPOCH", help="measure (and so keep) no epoch before this one: the probe costs a third of a CPU epoch")
    ap.add_argument("--base-adapter", help="an adapter (.safetensors, as MedText reads it) added to the frozen weights first: with --rank 0 --epochs 0 it measures that adapter")
    ap.add_argument("--time-limit", type=float, default=0, help="start no epoch past this many seconds (0: none)")
    ap.add_argument("--stop-after", type=int, default=0, metavar="EPOCH", help="train no epoch after this one, the learning rate still following the --epochs schedule (0: all of them); the CPU seeds of session 8 stopped this way, after 4 of 6, by --time-limit")
    args = ap.parse_args()
    if args.probe_from > (args.stop_after or args.epochs):
        sys.exit(f"error: --probe-from {args.probe_from} is after the last epoch trained: no epoch would be measured or kept")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.time()

    tasks = []
    for spec in args.task:
        name, path = spec.split("=", 1)
        tasks.append((name, read_split(path)))
    texts = sorted(set().union(*(rows.keys() for _, rows in tasks)))
    row_of = {t: i for i, t in enumerate(texts)}
    # Every task must agree on which part a text is in: a text the encoder
    # trains on must be in no task's validation or test part.
    part_of = {}
    for name, rows in tasks:
        for t, (part, _) in rows.items():
            if part_of.setdefault(t, part) != part:
                sys.exit(f"error: a text is in the {part_of[t]} part of one task and the {part} part of {name}")
    parts = [part_of[t] for t in texts]
    label_sets = []
    for name, rows in tasks:
        ids = sorted({label for _, label in rows.values()})
        index = {l: i for i, l in enumerate(ids)}
        y = np.full(len(texts), -1)
        for t, (_, label) in rows.items():
            y[row_of[t]] = index[label]
        label_sets.append((name, ids, y))

    names = [name for name, _ in tasks]
    contrastive = []  # (task index, weight)
    for spec in args.supcon:
        name, _, weight = spec.rpartition("=")
        name = name or names[0]
        if name not in names:
            sys.exit(f"error: --supcon {spec}: no task {name!r} (tasks: {', '.join(names)})")
        try:
            weight = float(weight)
        except ValueError:
            sys.exit(f"error: --supcon {spec}: the weight must be a number")
        if weight:
            contrastive.append((names.index(name), weight))

    windows = Windows(f"{args.encoder}/tokenizer.json", args.max_tokens)
    windows_of = {t: windows(t) for t in texts}
    encoder = Encoder(args.encoder, args.rank, args.alpha, args.dropout, args.full, device)
    if args.base_adapter:
        encoder.merge(args.base_adapter)

    heads = []
    for _, ids, y in label_sets:
        train_y = y[[i for i, p in enumerate(parts) if p == "train" and y[i] >= 0]]
        counts = np.bincount(train_y, minlength=len(ids))
        heads.append((torch.nn.Linear(encoder.hidden, len(ids)).to(device), class_weights(counts, args.class_weight_cap).to(device)))
    train_rows = [i for i, p in enumerate(parts) if p == "train"]
    groups = [
        {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": args.lr},
        {"params": [p for h, _ in heads for p in h.parameters()], "lr": args.head_lr},
    ]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(train_rows) / args.batch)
    warmup = max(1, steps // 16)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    ys = [torch.tensor(y, device=device) for _, _, y in label_sets]
    # (task index, weight, each label's anchor weight or None), settled once.
    contrastive_terms = [(task, weight, heads[task][1] if args.supcon_weighting == "class" else None) for task, weight in contrastive]

    def measure():
        # The probe runs on the CPU: its small mini-batches are faster there.
        vectors = embed_all(encoder, windows_of, texts, device).cpu()
        probed = label_sets if args.probe == "all" else label_sets[:1]
        return {
            name: probe(vectors, np.where(y >= 0, y, 0).tolist(), [p if y[i] >= 0 else "none" for i, p in enumerate(parts)], len(ids), args.seed, args.class_weight_cap)
            for name, ids, y in probed
        }

    history = [{"epoch": 0, "seconds": time.time() - started}]
    best_epoch, best_score, best_adapter = 0, -1.0, encoder.adapter()
    if args.probe_from <= 0:
        history[0]["figures"] = measure()
        best_score = history[0]["figures"][tasks[0][0]]["validation"]["macro_f1"]
    print(json.dumps(history[-1]), flush=True)
    for epoch in range(1, args.epochs + 1):
        if args.stop_after and epoch > args.stop_after:
            break
        if args.time_limit and epoch > 1:
            per_epoch = (time.time() - started) / epoch
            if time.time() - started + per_epoch > args.time_limit:
                print(f"stopping before epoch {epoch}: --time-limit", flush=True)
                break
        encoder.train()
        order = random.sample(train_rows, len(train_rows))
        total = 0.0
        for s in range(0, len(order), args.batch):
            rows = order[s : s + args.batch]
            vectors = embed(encoder, windows_of, [texts[i] for i in rows], device, True, args.pieces)
            index = torch.tensor(rows, device=device)
            loss = 0.0
            for (head, weight), y in zip(heads, ys):
                target = y[index]
                keep = target >= 0
                if keep.any():
                    # Unit vectors times 20: logits of a useful size early on.
                    loss = loss + weighted_loss(head(20 * vectors[keep]), target[keep], weight)
            for task, weight, label_weight in contrastive_terms:
                loss = loss + weight * supervised_contrastive(vectors, ys[task][index], args.supcon_temperature, label_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        history.append({"epoch": epoch, "train_loss": total / len(order), "seconds": time.time() - started})
        if epoch < args.probe_from:
            print(json.dumps(history[-1]), flush=True)
            continue
        history[-1]["figures"] = measure()
        history[-1]["seconds"] = time.time() - started
        print(json.dumps(history[-1]), flush=True)
        score = history[-1]["figures"][tasks[0][0]]["validation"]["macro_f1"]
        if score > best_score:
            best_epoch, best_score, best_adapter = epoch, score, encoder.adapter()
        # After every epoch, so a run stopped from outside keeps what it has.
        save(args, tasks, history, best_epoch, best_adapter)

    save(args, tasks, history, best_epoch, best_adapter)
    print(f"kept epoch {best_epoch}: validation macro-F1 {best_score:.4f}; {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
