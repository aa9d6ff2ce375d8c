"""Research stays out of the product.

Research notes live under ``docs/research/`` (with their scripts); ``experiments/`` keeps only
what reproduces shipped artefacts. Nothing under ``src/`` may point at a research note or import
from ``experiments``/``docs``, every script left in ``experiments/prior_samples/`` is one its
README explains, and the research note's relative links name files that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PRIOR_SAMPLES = ROOT / "experiments" / "prior_samples"
RESEARCH = ROOT / "docs" / "research"

#: an import of the research or experiment folders, as a module or through sys.path
IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:experiments|docs)\b"
    r"|sys\.path\.\w+\(.*\b(?:experiments|docs)\b",
    re.M,
)
#: what a script is: run or imported, never read as data
SCRIPT_SUFFIXES = (".py", ".sh")


def source_texts() -> list[tuple[Path, str]]:
    """Every text file of the package under ``src/`` (build metadata and caches left out)."""
    texts = []
    for path in sorted(SRC.rglob("*")):
        parts = set(path.relative_to(SRC).parts)
        if (
            not path.is_file()
            or "__pycache__" in parts
            or any(p.endswith(".egg-info") for p in parts)
        ):
            continue
        try:
            texts.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:  # weights, images
            continue
    return texts


def test_src_scan_sees_the_package() -> None:
    names = {p.name for p, _ in source_texts()}
    assert {"prior.py", "embedded.yaml"} <= names


def test_src_does_not_mention_research_notes() -> None:
    offenders = [str(p.relative_to(ROOT)) for p, text in source_texts() if "docs/research" in text]
    assert not offenders, f"src/ points at docs/research: {offenders}"


def test_src_does_not_import_experiments_or_docs() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0).strip()}"
        for p, text in source_texts()
        if p.suffix == ".py"
        for m in IMPORT.finditer(text)
    ]
    assert not offenders, f"src/ imports research code: {offenders}"


@pytest.mark.parametrize(
    "text",
    [
        "from experiments.prior_samples import quality",
        "import docs.research",
        "sys.path.insert(0, 'docs/x')",
    ],
)
def test_import_pattern_catches(text: str) -> None:
    assert IMPORT.search(text)


def test_import_pattern_spares_hydra_experiments() -> None:
    assert not IMPORT.search("from singexp.config import experiment_dir  # +experiment=train_prior")


def test_every_prior_samples_script_is_in_its_readme() -> None:
    readme = (PRIOR_SAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in PRIOR_SAMPLES.iterdir() if p.suffix in SCRIPT_SUFFIXES)
    assert scripts, "experiments/prior_samples/ has no scripts"
    missing = [name for name in scripts if name not in readme]
    assert not missing, f"scripts the README does not explain: {missing}"


def test_prior_samples_readme_points_at_the_research_note() -> None:
    readme = (PRIOR_SAMPLES / "README.md").read_text()
    assert "docs/research/prior_samples.md" in readme
    assert (RESEARCH / "prior_samples.md").is_file()


def test_research_note_links_exist_under_docs() -> None:
    note = RESEARCH / "prior_samples.md"
    targets = re.findall(r"\]\(([^)\s]+)\)", note.read_text())
    assert targets
    for target in targets:
        assert "://" not in target, target
        path = (note.parent / target.split("#")[0]).resolve()
        assert path.is_file(), target
        assert path.is_relative_to(ROOT / "docs"), f"{target}: outside docs/"
