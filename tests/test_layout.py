"""The layout holds: data flows one way (app -> backend -> viewer -> motioncore), backend's stages
import only the stages before them, and no module imports itself back through others. Read from
the code's own import statements (inside functions too), so a lazy import cannot hide a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("motioncore", "viewer", "backend", "app")
# lower number = lower layer; a module may import its own layer or below, never above
LAYERS = [
    ("motioncore", 0),
    ("viewer", 1),
    ("backend.checkpoints", 2), ("backend.curves", 2), ("backend.defaults", 2),
    ("backend.data", 3),
    ("backend.retrieval", 4),
    ("backend.generation", 5),
    ("backend.evaluation", 6),
    ("backend.pipeline", 7),
    ("backend.bench", 8),
    ("backend.cli", 9),
    ("backend.__main__", 10), ("backend", 10),
    ("app", 11),
    ("launch", 12),
]


def layer(module: str) -> int:
    for prefix, n in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return n
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def modules() -> dict[str, Path]:
    out = {"launch": REPO / "launch.py"}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports (``from a.b import c`` counts a.b.c when that is a module)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:            # a name inside a module -> that module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {n: imports_of(n, p, known) for n, p in mods.items()}


def test_no_upward_import():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in graph().items() for d in deps
           if layer(d) > layer(m) and not d.startswith(m + ".")]   # a package may name its modules
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    g = graph()
    for m in g:                                    # a package's __init__ naming its modules is fine
        g[m] = {d for d in g[m] if not d.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(d):
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if not state.get(m):
            visit(m)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The reader itself: relative imports resolve, names inside modules map to their module."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import g\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    assert imports_of("pkg.a", tmp_path / "pkg" / "a.py", known) == {"pkg.b"}
    assert imports_of("pkg.b", tmp_path / "pkg" / "b.py", known) == {"pkg.a"}
    assert layer("backend.pipeline") > layer("backend.evaluation.rows")
    with pytest.raises(AssertionError):
        layer("somewhere.else")


def test_readme_map_names_every_folder_and_module_group():
    """The README's "where things are" map lists every package folder (and backend's modules)."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Layout")
    block = text[start:text.index("```", text.index("```", start) + 3)]
    missing = []
    for pkg in PACKAGES:
        if f"{pkg}/" not in block:
            missing.append(pkg)
        for p in sorted((REPO / pkg).iterdir()):
            if p.name.startswith(("_", ".")) or p.name == "__pycache__":
                continue
            name = p.name + "/" if p.is_dir() else p.name
            if (p.is_dir() or pkg in ("backend", "app")) and name not in block:
                missing.append(f"{pkg}/{name}")
    for sub in (REPO / "backend").iterdir():
        if sub.is_dir() and not sub.name.startswith("_"):
            for p in sub.iterdir():
                if p.is_dir() and not p.name.startswith("_") and p.name + "/" not in block:
                    missing.append(f"backend/{sub.name}/{p.name}/")
    assert not missing, "not in the README's layout map: " + ", ".join(missing)
