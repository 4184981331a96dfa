#!/usr/bin/env python3
"""Assembles THIRD-PARTY-NOTICES: the header (models, data, vendored C
libraries), the Rust crates' notices from cargo-about, and the licence of
every npm package that ships in the user interface (production dependencies
only: the build tools do not ship). Fails on a shipped npm package without a
licence file, as cargo-about does for a crate."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENSE_MIT", "LICENSE-MIT", "LICENCE")


def npm_packages(ui: Path) -> list[Path]:
    """Folders of the npm packages the UI bundle is built from."""
    out = subprocess.run(
        ["npm", "ls", "--omit=dev", "--all", "--parseable"],
        cwd=ui, check=True, capture_output=True, text=True,
    ).stdout
    return sorted({Path(line) for line in out.splitlines()[1:] if line.strip()})


def licence_text(folder: Path) -> str:
    for name in LICENCE_FILES:
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    raise SystemExit(f"error: npm package {folder.name} ships without a licence file")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--ui", type=Path, required=True)
    args.add_argument("--crates", type=Path, required=True)
    args.add_argument("--header", type=Path, required=True)
    args.add_argument("--version", required=True)
    args.add_argument("--commit", required=True)
    opts = args.parse_args()

    out = sys.stdout
    header = opts.header.read_text(encoding="utf-8")
    out.write(header.replace("@VERSION@", opts.version).replace("@COMMIT@", opts.commit))
    out.write("\n" + opts.crates.read_text(encoding="utf-8"))
    out.write("\n== npm packages in the user interface ==\n")
    for folder in npm_packages(opts.ui):
        meta = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        out.write("\n" + "-" * 76 + "\n")
        out.write(f"{meta['name']} {meta['version']} ({meta.get('license', 'see below')})\n\n")
        out.write(licence_text(folder))


if __name__ == "__main__":
    main()
