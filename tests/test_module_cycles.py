"""No import circles among the modules of ``service``: a module that imports another, directly
or through others, is never imported back by it. Every import counts, the ones inside functions
too (a lazy import is the usual way a circle is hidden), so the runtime, the brains and the
orchestration compose one way: the callers that build a process (the app, the Celery worker, the
job process) hand the job runner down.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports (``from a import b`` counts ``a.b`` when it
    is a module, else ``a``); relative imports are resolved against ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # import service.a.b names the module service.a.b or its package
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    paths = sorted((root / package).rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    graph = {}
    for path in paths:
        name = module_name(path, root)
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_modules(path.read_text(), own_package, known) - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted.

    A package's ``__init__`` importing its own submodules is not a circle of modules."""
    graph = {m: {t for t in targets if not (_is_package(m, graph) and t.startswith(m + "."))}
             for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _is_package(module: str, graph: dict[str, set[str]]) -> bool:
    return any(other.startswith(module + ".") for other in graph)


def test_service_has_no_import_circles() -> None:
    assert circles(import_graph(ROOT, "service")) == []


def test_a_circle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "runtime.py").write_text("from service.jobs import Jobs\n")
    (package / "jobs.py").write_text("class Jobs:\n    pass\n")
    (package / "orchestration.py").write_text("from service.runtime import Runtime\n")
    (package / "app.py").write_text("from service import orchestration\nfrom .runtime import build\n")
    assert circles(import_graph(tmp_path, "service")) == []
    (package / "runtime.py").write_text("from service.jobs import Jobs\n\ndef build():\n"
                                        "    from service.orchestration import run_job\n")
    assert circles(import_graph(tmp_path, "service")) == [["service.orchestration", "service.runtime"]]
