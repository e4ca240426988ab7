"""The packages' import arrows point one way: models < service < workers < bench < brain_cli, with
the migrations beside the service, and the client on its own.

Every import statement of every module counts, the ones inside functions too (a lazy import is
still a dependency), and so does ``importlib.import_module`` of a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project's packages it may import (itself always)
ALLOWED = {
    "models": set(),
    "service": {"models"},
    "migrations": {"service", "models"},
    "workers": {"service", "models"},
    "brain_client": set(),  # installs alone (client/pyproject.toml): nothing of the server
    "bench": {"brain_client", "service", "models", "workers"},
    "brain_cli": {"service", "workers", "bench", "brain_client", "models"},
}


def imported_packages(source: str) -> set[str]:
    """The top-level names of the modules ``source`` imports (relative imports are the package's own)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value.split(".")[0])
    return found


def upward_arrows(root: Path = ROOT) -> list[str]:
    """``"path imports package"`` for every import of a project package that ``ALLOWED`` forbids."""
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for target in imported_packages(path.read_text()) & ALLOWED.keys():
                if target != package and target not in allowed:
                    wrong.append(f"{path.relative_to(root)} imports {target}")
    return wrong


def test_no_package_imports_one_above_it() -> None:
    assert upward_arrows() == []


def test_every_package_of_the_project_has_a_place() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == ALLOWED.keys()


@pytest.mark.parametrize("source, arrow", [
    ("from workers.celery_app import create_celery", "service/x.py imports workers"),
    ("def f():\n    import bench.data", "service/x.py imports bench"),
    ("import importlib\nimportlib.import_module('brain_client.cli')", "service/x.py imports brain_client"),
])
def test_an_upward_arrow_is_found(tmp_path: Path, source: str, arrow: str) -> None:
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "service" / "x.py").write_text(source + "\nfrom service import schemas\nfrom . import y\n")
    assert upward_arrows(tmp_path) == [arrow]
