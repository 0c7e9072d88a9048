"""The codebase's shape: public torch APIs only, one-way imports, a model file one can read, a short README."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = ("rest", "ablations", "analysis")  # the packages pyproject installs, with rest_knobs.py
LAYERS = {"rest_knobs": 0, "rest": 1, "ablations": 2, "analysis": 3, "benchmarks": 4}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every project module (packages and benchmarks, not tests or scripts)."""
    out = {"rest_knobs": ROOT / "rest_knobs.py"}
    for package in (*INSTALLED, "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Every project module a file imports (`from a.b import c` counts a.b, and a.b.c where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


MODULES = modules()
GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
COMMANDS = {name for name, path in MODULES.items() if 'if __name__ == "__main__":' in path.read_text()}


def test_installed_packages_use_no_private_torch_api():
    private = re.compile(r"torch\.(_[A-Za-z]|[A-Za-z_.]*\._[A-Za-z]|ops\.mkldnn)|nn\.modules\.module\._")
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for name, path in MODULES.items() if name.split(".")[0] in ("rest_knobs", *INSTALLED)
            for i, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert hits == []


def test_no_import_runs_up_a_layer_and_no_installed_module_imports_a_command_or_benchmark():
    upward = [(a, b) for a, deps in GRAPH.items() for b in deps if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert upward == []
    helpers = [(a, b) for a, deps in GRAPH.items() if a.split(".")[0] in ("rest_knobs", *INSTALLED)
               for b in deps if b in COMMANDS or b.startswith("benchmarks")]
    assert helpers == []


def test_no_import_circle():
    def reaches(start: str, target: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            for dep in GRAPH[stack.pop()] - seen:
                if dep == target:
                    return True
                seen.add(dep)
                stack.append(dep)
        return False

    assert [name for name in GRAPH if reaches(name, name)] == []


def test_files_a_newcomer_reads_first_stay_short():
    assert len((ROOT / "rest" / "rest.py").read_text().splitlines()) <= 700  # the model, in timm's shape
    assert len((ROOT / "README.md").read_text()) <= 12_000  # the rest is in docs/


def test_imports_inside_functions_only_at_the_heavy_boundary():
    """A function imports only what is heavy or optional to load (torch, timm, pandas, submitit...); the
    standard library and the project's own torch-free modules are imported at the top of the module."""
    import sys

    deferred = []
    for name, path in MODULES.items():
        if name.split(".")[0] not in ("rest_knobs", *INSTALLED):
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                           [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                deferred += [f"{name}:{node.lineno} {m}" for m in modules
                             if m.split(".")[0] in sys.stdlib_module_names]
    assert deferred == []
