"""The layout holds: no import cycle between untuned's modules (imports inside functions and the modules a registry
names in a string counted too), no function longer than 60 lines, no module much over 400 (docs/architecture.md);
planning a model imports no backend."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "untuned"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The untuned modules ``path`` imports, anywhere in it (a package's ``from x import y`` may name a module), and
    those a registry names in a string ("untuned.backends.remote:RemoteBackend.from_spec") to import later."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"untuned(\.\w+)+:[\w.]+", node.value):
            found.add(node.value.partition(":")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("untuned"):
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules} or {node.module}
    return found & modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_modules():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(files)) - {name} for name, path in files.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of concepts: leave out a package's own children
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    assert cycles(graph) == []


def test_no_function_over_60_lines_nor_module_over_450():
    long_functions, long_modules = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 450:
            long_modules.append((str(path.relative_to(ROOT)), len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.lineno  # the signature (decorators left out)
                if node.end_lineno - first + 1 > 60:
                    long_functions.append((str(path.relative_to(ROOT)), node.name, node.end_lineno - first + 1))
    assert long_functions == [] and long_modules == []


def test_tests_run_coroutines_through_run_async():
    """The browser tests keep an event loop running in the test thread, so a bare ``asyncio.run`` in a test passes
    alone and fails in the whole suite (it did once, on CI): tests go through helpers.run_async."""
    bare = []
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.func if isinstance(node, ast.Call) else None
            if isinstance(call, ast.Attribute) and call.attr == "run" and getattr(call.value, "id", "") == "asyncio":
                bare.append(f"{path.name}:{node.lineno}")
    assert bare == []


def test_planning_a_model_imports_no_backend():
    """untuned.placement reads headers and specs from modules below the backends (untuned.spec, untuned.hub): the loop
    plan → backends → plan is cut."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    planning = [name for name in files if name == "untuned.placement" or name.startswith("untuned.placement.")]
    reached = {m for name in planning for m in imports(files[name], set(files))}
    assert not [m for m in reached if m == "untuned.backends" or m.startswith("untuned.backends.")]


def test_no_test_installs_system_packages():
    """Chromium and anything else of the system is installed by `make test` (.ci/chromium), never from a test."""
    tests = ROOT / "tests"
    found = [
        p.name
        for p in tests.rglob("*.py")
        if p.name != "test_architecture.py" and re.search(r"apt-get|\bdpkg\b|\byum\b", p.read_text())
    ]
    assert found == []


def test_the_server_is_grouped_per_endpoint_and_no_router_imports_another():
    """server/<endpoint>/ holds its router and its wire records (vLLM's entrypoints' way); a router imports no other
    router (what two endpoints share lives in a module below both)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    routers = [name for name in files if name.startswith("untuned.server.") and name.endswith(".router")]
    assert len(routers) == 8
    crossing = {r: sorted(m for m in imports(files[r], set(files)) if m.endswith(".router") and m != r) for r in routers}
    assert {r: found for r, found in crossing.items() if found} == {}


# docs/architecture.md's picture, bottom to top: a module imports from its own layer and those below, never above
LAYERS = [
    ("records", {"errors", "paths", "rows", "jsonl", "stats", "plugins"}),
    ("prompts", {"prompt", "pool", "tools", "conversation", "stopping", "chat_template", "constraint"}),
    ("models on disk", {"hub", "spec", "placement"}),
    ("backends", {"backends", "supervised"}),
    ("the assistant", {"assistant", "curve"}),
    ("benchmarks", {"benchmarks", "data"}),
    ("runs", {"runner", "generation", "answers"}),
    ("judging", {"judge"}),
    ("shift", {"shift"}),
    ("other tools' files", {"interop"}),
    ("reports", {"report"}),
    ("the pipeline", {"pipeline"}),
    ("experiments", {"experiment"}),
    ("the server", {"server"}),
    ("the command line", {"cli", "__main__", "untuned"}),
]


def test_no_import_goes_from_a_lower_layer_back_up_and_docs_draw_the_same_layers():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    level = {group: i for i, (_, groups) in enumerate(LAYERS) for group in groups}

    def group(name: str) -> str:
        return name.split(".")[1] if "." in name else name

    assert sorted({group(m) for m in files} - set(level)) == []  # every module placed in a layer
    upward = sorted(
        f"{name} -> {m}"
        for name, path in files.items()
        for m in imports(path, set(files))
        if level[group(m)] > level[group(name)]
    )
    assert upward == []
    table = (ROOT / "docs" / "architecture.md").read_text().split("| layer |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == [name for name, _ in LAYERS]


def test_no_package_above_4000_lines():
    sizes = {d.name: sum(len(p.read_text().splitlines()) for p in d.rglob("*.py")) for d in PACKAGE.iterdir() if d.is_dir()}
    assert {name: n for name, n in sizes.items() if n > 4000} == {}
