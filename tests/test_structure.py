"""The seams the folders promise, proven by reading the imports (no TensorFlow needed, milliseconds):
the dashboard never reaches TensorFlow, only `bnviz/tf/` imports it, and `bnviz/` never imports
Streamlit."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras")  # what the dashboard process must never load
TF_PACKAGE = "bnviz.tf"


@dataclass(frozen=True)
class Import:
    """One imported module name, where it is written, and whether only a function body runs it."""

    module: str
    path: Path
    line: int
    in_function: bool

    def under(self, package: str) -> bool:
        return self.module == package or self.module.startswith(package + ".")

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def module_path(name: str) -> Path | None:
    """The file of a first-party module name, or None for anything installed."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def package_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[Import]:
    """Every import in a file, `from a import b` also as `a.b` (b may be a module)."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, path, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = resolve(child, path)
                found.append(Import(base, path, child.lineno, in_function))
                found.extend(Import(f"{base}.{alias.name}", path, child.lineno, in_function) for alias in child.names)
            visit(child, nested)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def resolve(node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    package = package_name(path) if path.name == "__init__.py" else package_name(path).rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def parents(name: str) -> list[str]:
    """`a.b.c` → `a`, `a.b`: importing a module first runs its packages' `__init__`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def reachable(entry_points: list[Path]) -> dict[Path, Import | None]:
    """Every first-party file the entry points can load, each with the import that first reached it.

    A function-level import counts (a page may call that function), except in a package's
    `__init__`: its lazy `__getattr__` runs only when that attribute is asked for, never on import."""
    reached: dict[Path, Import | None] = {path: None for path in entry_points}
    pending = list(entry_points)
    while pending:
        path = pending.pop()
        for found in imports(path):
            if path.name == "__init__.py" and found.in_function:
                continue
            for name in (*parents(found.module), found.module):
                target = module_path(name)
                if target is not None and target not in reached:
                    reached[target] = found
                    pending.append(target)
    return reached


def library_files() -> list[Path]:
    return sorted((ROOT / "bnviz").rglob("*.py"))


def dashboard_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]


def chain(reached: dict[Path, Import | None], path: Path) -> str:
    """How an entry point reaches `path`, one import per step, for a failure message."""
    steps = []
    while (step := reached.get(path)) is not None:
        steps.append(str(step))
        path = step.path
    return " ← ".join(steps) or str(path.relative_to(ROOT))


def test_the_dashboard_never_reaches_tensorflow():
    reached = reachable(dashboard_files())
    assert len(reached) > len(dashboard_files()) + 10, "the walk found too few modules to prove anything"
    heavy = [
        f"{found} (via {chain(reached, found.path)})"
        for path in reached
        for found in imports(path)
        if not (path.name == "__init__.py" and found.in_function) and (any(found.under(h) for h in HEAVY) or found.under(TF_PACKAGE))
    ]
    assert not heavy, "the dashboard process would import TensorFlow:\n" + "\n".join(heavy)


def test_only_the_tf_package_imports_tensorflow():
    outside = [str(found) for path in library_files() if TF_PACKAGE not in package_name(path) for found in imports(path) if any(found.under(h) for h in HEAVY)]
    assert not outside, "TensorFlow/Keras imported outside bnviz/tf/:\n" + "\n".join(outside)


def test_the_light_side_loads_the_tf_package_only_inside_functions():
    """Importing a light module never loads TensorFlow: the CLI, the notebook API and the Ray task
    body reach `bnviz.tf` only when a function that needs it runs."""
    eager = [
        str(found)
        for path in library_files()
        if not package_name(path).startswith(TF_PACKAGE)
        for found in imports(path)
        if found.under(TF_PACKAGE) and not found.in_function
    ]
    assert not eager, "a light module imports bnviz.tf at import time:\n" + "\n".join(eager)


def test_the_library_never_imports_streamlit():
    found = [str(found) for path in library_files() for found in imports(path) if found.under("streamlit")]
    assert not found, "bnviz/ is a plain library:\n" + "\n".join(found)


def test_the_walk_sees_what_it_is_shown(tmp_path, monkeypatch):
    """The checks above can fail: a page that imports a module that imports Keras inside a function is caught."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("def __getattr__(name):\n    import keras\n")
    (tmp_path / "pkg" / "light.py").write_text("from pkg import deep\n")
    (tmp_path / "pkg" / "deep.py").write_text("def fit():\n    from keras import layers\n")
    (tmp_path / "page.py").write_text("import pkg.light\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    reached = reachable([tmp_path / "page.py"])
    assert tmp_path / "pkg" / "deep.py" in reached
    found = [f for path in reached for f in imports(path) if f.under("keras") and not (path.name == "__init__.py" and f.in_function)]
    assert [(f.path.name, f.module) for f in found] == [("deep.py", "keras"), ("deep.py", "keras.layers")]
    assert "page.py" in chain(reached, tmp_path / "pkg" / "deep.py")
