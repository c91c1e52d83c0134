"""The command line shared by the scripts that generate a document: write it, or with
``--check`` exit 1 when the file on disk differs from what the script would write."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ieu_potion.io import atomic_write_text


def generated_doc_main(output: Path, render: Callable[[], str], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            sys.exit(f"{output} is stale: run python {sys.argv[0]}")
        return
    atomic_write_text(output, text)
    print(f"wrote {output}")
