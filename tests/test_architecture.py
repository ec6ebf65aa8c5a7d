"""The import layers of docs/architecture.md, enforced on the source (top-level and in-function imports alike):
each module imports only modules of its own layer or of lower ones, no import cycle exists between modules, and a
project import inside a function says why it is there ("# lazy: ..."). A module added in the wrong layer, an
upward import, or a new cycle fails here with the offending import named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "interp", "experiments", "checkpoints")

# lowest first; a module belongs to the longest prefix that names it
LAYERS = ["tasks", "interp", "experiments.core", "experiments.training", "experiments.analysis", "experiments.jobs",
          "experiments.report", "experiments.run", "experiments.controls", "experiments.api", "experiments.cli"]
TOP_LEVEL = {"experiments": "experiments.api", "checkpoints": "tasks"}  # package modules themselves: their rank


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def layer_of(mod: str) -> int:
    mod = TOP_LEVEL.get(mod, mod)
    best = max((l for l in LAYERS if mod == l or mod.startswith(l + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{mod} belongs to no layer of docs/architecture.md: add it to one")
    return LAYERS.index(best)


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(mod: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int, bool, str]]:
    """(imported project module, line, inside a function, source line) of every import of `mod`."""
    src = path.read_text()
    lines, tree = src.splitlines(), ast.parse(src)
    in_fn = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in n.names] + [base]
        else:
            continue
        for t in dict.fromkeys(_resolve(t, mods) for t in targets):
            if t and t != mod and t.split(".")[0] in PACKAGES:
                out.append((t, n.lineno, id(n) in in_fn, lines[n.end_lineno - 1]))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int, bool, str]]]:
    mods = modules()
    return {m: imports(m, p, mods) for m, p in mods.items()}


def test_every_import_points_down_the_layers(graph):
    bad = [f"{m}:{line} imports {t} ({LAYERS[layer_of(t)]} is above {LAYERS[layer_of(m)]})"
           for m, deps in graph.items() for t, line, _, _ in deps if layer_of(t) > layer_of(m)]
    assert not bad, "\n".join(bad)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles(graph):
    cycles = find_cycles({m: {t for t, *_ in deps} for m, deps in graph.items()})
    assert not cycles, "import cycles (in-function imports counted): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_inside_functions_say_why(graph):
    bad = [f"{m}:{line}: {src.strip()}" for m, deps in graph.items() for _, line, inner, src in deps
           if inner and "# lazy:" not in src]
    assert not bad, "project imports inside functions need a '# lazy: <reason>' comment:\n" + "\n".join(bad)


def test_the_checks_see_a_violation(tmp_path):
    """The checks above can fail: an upward import and a cycle written into a scratch tree are found."""
    a = tmp_path / "interp" / "a.py"
    a.parent.mkdir()
    a.write_text("import experiments.cli.main\n\ndef f():\n    from interp import b\n")
    mods = {"interp.a": a, "interp.b": a, "experiments.cli.main": a}
    deps = imports("interp.a", a, mods)
    assert ("experiments.cli.main", 1, False) in [d[:3] for d in deps]
    assert layer_of("experiments.cli") > layer_of("interp.a")
    assert any(inner and "# lazy:" not in src for _, _, inner, src in deps)
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["tasks", "interp", "experiments"])
def test_every_public_name_resolves(package):
    """Each package's `__all__` is its public API: every name must load (a renamed or moved function breaks here,
    not in a user's notebook), and experiments' API is exactly the notebook facade's functions."""
    import importlib

    mod = importlib.import_module(package)
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        getattr(mod, "no_such_name")
    if package == "experiments":
        from experiments import api

        assert set(mod.__all__) <= set(api.__all__)
        assert all(getattr(mod, n) is getattr(api, n) for n in mod.__all__)


def test_functions_fit_a_screen():
    """No function over 60 lines unless its docstring says why ("Longer than a screen ...")."""
    long = []
    for mod, path in modules().items():
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                if "Longer than a screen" not in (ast.get_docstring(n) or ""):
                    long.append(f"{mod}.{n.name}: {n.end_lineno - n.lineno + 1} lines")
    assert not long, "\n".join(long)
