"""singexp installs like a package: the wheel carries the configs and the shipped weights, and
the declared dependencies are the ones the code imports.

The configs live in ``src/singexp/conf`` (the repository's top-level ``conf`` links there) and the
weights in ``src/singexp/assets``; both are package data, found through the package's own path
(``singexp.config.CONF_DIR``, ``ASSETS_DIR``), so a non-editable install runs from any folder.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import singexp
from singexp.config import ASSETS_DIR, CONF_DIR

PACKAGE = Path(singexp.__file__).resolve().parent
ROOT = PACKAGE.parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: declared dependencies the code never imports by name, and why they are declared
USED_WITHOUT_IMPORT = {
    "torchsummary": "stlpips imports it without declaring it",
    "ipython": "stlpips imports it without declaring it",
    "tensorboard": "Lightning's TensorBoardLogger (logger=tensorboard)",
    "hydra-joblib-launcher": "launcher=joblib (Hydra plugin)",
    "hydra-submitit-launcher": "launcher=submitit_local / slurm (Hydra plugin)",
    "hydra-optuna-sweeper": "hparams_search=... (Hydra's Optuna sweeper plugin)",
}


def _normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_config_and_assets_are_package_data() -> None:
    assert CONF_DIR == PACKAGE / "conf" and (CONF_DIR / "config.yaml").is_file()
    assert ASSETS_DIR == PACKAGE / "assets"
    assert (PACKAGE / "py.typed").is_file()
    # the top-level conf/ readers look at is the package's config tree
    assert (ROOT / "conf").resolve() == CONF_DIR


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], str]:
    """The wheel built from a copy of the sources (so that the build leaves nothing in the
    repository): its file names and its entry points. The copy holds the repository's
    ``tools/`` too, so a packaging setting that pulled them in would show."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    shutil.copytree(ROOT / "tools", source / "tools", ignore=ignore)
    dist = tmp_path / "dist"
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (built,) = dist.glob("singexp-*.whl")
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        return names, archive.read(entry_points).decode()


def test_wheel_carries_every_config_and_weight_file(wheel: tuple[set[str], str]) -> None:
    names, scripts = wheel
    configs = {f"singexp/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*")}
    configs = {n for n in configs if n.endswith(".yaml")}
    weights = {
        f"singexp/assets/{p.relative_to(ASSETS_DIR).as_posix()}"
        for p in ASSETS_DIR.rglob("*")
        if p.is_file()
    }
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    assert {"dataset", "experiment", "sampler", "prior", "hydra"} <= groups
    assert "singexp/conf/config.yaml" in configs and len(weights) >= 9
    assert configs <= names, sorted(configs - names)
    assert weights <= names, sorted(weights - names)
    modules = {f"singexp/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "singexp/py.typed" in names
    assert "singexp = singexp.__main__:main" in scripts


def test_wheel_holds_no_repository_tooling(wheel: tuple[set[str], str]) -> None:
    """tools/doc_tables.py (it reads benchmarks/*.py and committed result files by path) is
    repository tooling: the installed package has no doc_tables and no tools/."""
    names, _ = wheel
    assert (ROOT / "tools" / "doc_tables.py").is_file()
    assert not (PACKAGE / "doc_tables.py").exists()
    assert not [n for n in names if "doc_tables" in n or n.startswith("tools/")], sorted(names)
    assert "singexp/report/__main__.py" in names  # python -m singexp.report from a wheel


def _imported_top_level_modules() -> set[str]:
    """Top-level modules imported anywhere in src/singexp, by statement or by
    ``importlib.import_module`` / ``importlib.util.find_spec`` of a literal name."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"import_module", "find_spec"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "singexp"}


def test_declared_dependencies_are_the_imported_ones() -> None:
    declared = {
        _normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        for spec in PYPROJECT["project"]["dependencies"]
    }
    providers = packages_distributions()
    imported: dict[str, str] = {}
    for module in sorted(_imported_top_level_modules()):
        dists = providers.get(module)
        assert dists, f"{module} is imported but not installed"
        imported[module] = _normalise(dists[0])
    # every imported distribution is declared (not only pulled in by another dependency)
    undeclared = {m: d for m, d in imported.items() if d not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    # every declared one is imported, or listed above with the reason it is needed
    unused = declared - set(imported.values()) - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"
    assert set(USED_WITHOUT_IMPORT) <= declared
