"""The docs stand alone: every relative link and every repository path that the README,
docs/ and conf/ name exists, and none of them points outside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("conf/**/*.yml")])
DOCS.append(ROOT / "conf" / "README.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path into the repository's own folders, as the docs write them
PATH = re.compile(
    r"(?<![\w./-])((?:docs|scripts|benchmarks|notebooks|conf|src/ieu_potion|tests|\.ci)/"
    r"[\w./-]*\w\.(?:md|py|yml|ipynb|toml|json))"
)
# Paths the reader creates (a local configuration, the tutorials' modules).
MADE_BY_THE_USER = {
    "conf/local/globals.yml",
    "conf/local/parameters.yml",
    "conf/local/catalog.yml",
    "src/ieu_potion/defences/label_smoothing.py",
    "src/ieu_potion/defences/loss_filter.py",
    "src/ieu_potion/attacks/frame.py",
    "src/ieu_potion/adapters/arrays_source.py",
    "src/ieu_potion/reporting/accuracy_vs_asr.py",
}


def named_paths(path: Path) -> list[tuple[str, Path]]:
    text = path.read_text(encoding="utf-8")
    found = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        found.append((target, path.parent / target.split("#")[0]))
    for target in PATH.findall(text):
        if target not in MADE_BY_THE_USER and "<" not in target:
            found.append((target, ROOT / target))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc):
    missing = [name for name, path in named_paths(doc) if not path.exists()]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_points_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    if doc.name == "benchmarks.md":  # its tables of test runs say whether ../shared was there
        text = text.replace("`../shared` beside", "")
    assert "../shared" not in text
    assert all(
        not (doc.parent / target).resolve().is_relative_to(ROOT.parent / "shared")
        for target, _ in named_paths(doc)
    )


def test_a_dangling_path_is_found(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("See docs/methods.md, [the map](missing.md) and `scripts/nope.py`.")
    names = [name for name, path in named_paths(doc) if not path.exists()]
    assert names == ["missing.md", "scripts/nope.py"]
