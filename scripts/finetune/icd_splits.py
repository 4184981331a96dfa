#!/usr/bin/env python3
"""Writes the ICD-10-CM splits that fine-tuning trains on, from the split that
MedText's block head was trained with, so the encoder is tuned and the heads
are tested on the same held-out categories.

    python3 icd_splits.py ICD_SPLIT.csv TERMS.csv OUT_DIR

ICD_SPLIT.csv is `medtext train --write-split` output for the block head
(part,label,group,text; `models/regenerate.sh` keeps it with
MEDTEXT_SPLITS_DIR); TERMS.csv is `scripts/icd10cm/make_dataset.py` output.
Writes OUT_DIR/split-block.csv (the same rows), split-chapter.csv (each block
replaced by the chapter it lies in) and split-category.csv (each label
replaced by the 3-character category, its group).
"""

import csv
import pathlib
import sys


def main(split_path, terms_path, out_dir):
    with open(terms_path, newline="", encoding="utf-8") as f:
        chapter_of = {}
        for row in csv.DictReader(f):
            chapter_of.setdefault(row["block"], row["chapter"])
    with open(split_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    unknown = sorted({r["label"] for r in rows} - chapter_of.keys())
    if unknown:
        sys.exit(f"error: {split_path} has blocks that {terms_path} does not: {', '.join(unknown[:5])}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relabel = {
        "block": lambda r: r["label"],
        "chapter": lambda r: chapter_of[r["label"]],
        "category": lambda r: r["group"],
    }
    for task, label in relabel.items():
        with open(out / f"split-{task}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["part", "label", "group", "text"])
            w.writerows([r["part"], label(r), r["group"], r["text"]] for r in rows)
    print(f"{len(rows)} rows -> {out}/split-{{block,chapter,category}}.csv")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
