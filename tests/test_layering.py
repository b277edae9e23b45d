"""The house's layering, checked on the source: which package may import which.

- ``crashsafe`` (the shared lower layer) imports neither ``forensics`` nor ``generators``;
- ``generators`` never imports ``forensics``;
- ``forensics`` core never imports ``generators``: only orchestration (``ORCHESTRATION``) joins them;
- no library module imports ``streamlit``, ``app`` or the CLI (``forensics.cli``);
- ``app/`` imports our packages only through their public API (what ``__all__`` reaches, step
  by step from the package) and never edits ``sys.path``.

Imports inside functions count too, and so do ``importlib.import_module("...")`` calls with a
literal name. Each rule is also run on a planted violation, so a checker that finds nothing
cannot pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("crashsafe", "forensics", "generators")
# Modules that may import both forensics and generators: the CLI and the end-to-end recipes.
ORCHESTRATION = ("forensics.cli", "forensics.__main__", "forensics.pipeline",
                 "forensics.general_recipe", "forensics.zoo_bridge")


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` under ``root`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, imported names) for every import in ``path``, nested ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base, tuple(alias.name for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value, ()


def _within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_file(root: Path, dotted: str) -> Path | None:
    """The source file of module ``dotted`` under ``root`` (a package's ``__init__.py``)."""
    path = root.joinpath(*dotted.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def public_names(root: Path, dotted: str) -> set[str] | None:
    """The literal ``__all__`` of module ``dotted``; None when it declares none."""
    path = _module_file(root, dotted)
    if path is None:
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                 for t in node.targets)):
            return set(ast.literal_eval(node.value))
    return None


def _not_public(root: Path, module: str, name: str) -> str | None:
    """Why ``module.name`` is not public API (None when each step is in its parent's __all__)."""
    names = public_names(root, module)
    if names is None:
        return f"{module} declares no __all__"
    if name not in names:
        return f"{name} is not in {module}.__all__"
    return None


def library_violations(root: Path) -> list[str]:
    """Every import in crashsafe/, generators/ and forensics/ that breaks a layering rule."""
    found = []
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            where = module_name(path, root)
            for line, target, _ in imports(path, root):
                at = f"{path.relative_to(root)}:{line} imports {target}"
                if package == "crashsafe" and _within(target, ("forensics", "generators")):
                    found.append(f"{at}: the lower layer imports neither library")
                if package == "generators" and _within(target, "forensics"):
                    found.append(f"{at}: generators never imports forensics")
                if (package == "forensics" and _within(target, "generators")
                        and not _within(where, ORCHESTRATION)):
                    found.append(f"{at}: only orchestration joins forensics and generators")
                if _within(target, ("streamlit", "app")):
                    found.append(f"{at}: library code never imports the app or streamlit")
                if _within(target, "forensics.cli") and not _within(where, ORCHESTRATION):
                    found.append(f"{at}: library code never imports the CLI")
    return found


def app_violations(root: Path) -> list[str]:
    """Every app import past our packages' public API, and every ``sys.path`` edit in app/.

    The public API is what ``__all__`` reaches: ``forensics.corpus.Corpus`` is public when
    ``corpus`` is in ``forensics.__all__`` and ``Corpus`` in ``forensics.corpus.__all__``.
    """
    found = []
    for path in sorted((root / "app").rglob("*.py")):
        if "sys.path" in path.read_text(encoding="utf-8"):
            found.append(f"{path.relative_to(root)}: edits sys.path")
        for line, target, names in imports(path, root):
            if target.split(".")[0] not in OURS:
                continue
            parts = target.split(".")
            steps = [(".".join(parts[:i]), parts[i]) for i in range(1, len(parts))]
            steps += [(target, name) for name in names]
            for module, name in steps:
                why = _not_public(root, module, name)
                if why:
                    found.append(f"{path.relative_to(root)}:{line} imports {target}: {why}")
                    break
    return found


def test_the_libraries_keep_their_layers() -> None:
    assert library_violations(ROOT) == []


def test_the_app_uses_only_the_public_api_and_no_path_edits() -> None:
    assert app_violations(ROOT) == []


def test_every_public_name_resolves() -> None:
    """What ``__all__`` promises is there: a name of the module, or a submodule of the package."""
    import importlib

    for package in OURS:
        module = importlib.import_module(package)
        for name in sorted(public_names(ROOT, package) or ()):
            if not hasattr(module, name):
                importlib.import_module(f"{package}.{name}")


def _plant(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")


@pytest.mark.parametrize("relative, source, says", [
    ("generators/nets/bad.py", "def f():\n    from forensics.metrics import ap\n",
     "generators never imports forensics"),
    ("generators/bad.py", "import importlib\nimportlib.import_module('forensics.corpus')\n",
     "generators never imports forensics"),
    ("crashsafe/bad.py", "from generators import registry\n", "imports neither library"),
    ("forensics/metrics.py", "from generators.quality import frechet_distance\n",
     "only orchestration"),
    ("forensics/report.py", "import streamlit as st\n", "never imports the app or streamlit"),
    ("forensics/detectors/bad.py", "from ..cli import main\n", "never imports the CLI"),
    ("generators/bad.py", "from app import components\n", "never imports the app"),
])
def test_a_planted_library_violation_is_found(tmp_path: Path, relative: str, source: str,
                                              says: str) -> None:
    for package in OURS:
        _plant(tmp_path, f"{package}/__init__.py", "")
    _plant(tmp_path, "forensics/detectors/__init__.py", "")
    _plant(tmp_path, relative, source)
    found = library_violations(tmp_path)
    assert len(found) == 1 and relative in found[0] and says in found[0], found


@pytest.mark.parametrize("source, says", [
    ("from forensics.detectors.base import read_manifest\n",
     "base is not in forensics.detectors.__all__"),
    ("import forensics.explain\n", "explain is not in forensics.__all__"),
    ("from forensics import _private_helper\n", "_private_helper is not in forensics.__all__"),
    ("from forensics.corpus import Corpus\n", "forensics.corpus declares no __all__"),
    ("from forensics.detectors import save_everything\n",
     "save_everything is not in forensics.detectors.__all__"),
    ("import sys\nsys.path.insert(0, 'app')\n", "edits sys.path"),
])
def test_a_planted_app_violation_is_found(tmp_path: Path, source: str, says: str) -> None:
    _plant(tmp_path, "forensics/__init__.py", "__all__ = ['corpus', 'detectors']\n")
    _plant(tmp_path, "forensics/corpus.py", "class Corpus: ...\n")
    _plant(tmp_path, "forensics/detectors/__init__.py", "__all__ = ['load_detector']\n")
    _plant(tmp_path, "forensics/detectors/base.py", "__all__ = ['read_manifest']\n")
    _plant(tmp_path, "app/Home.py",
           "import ui\nfrom forensics.detectors import load_detector\nfrom forensics import corpus\n")
    _plant(tmp_path, "app/pages/bad.py", source)
    found = app_violations(tmp_path)
    assert len(found) == 1 and says in found[0], found
