"""The layering contract: no import cycle between modules or between top-level folders (lazy imports included),
and no module over the size limit (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "adaptertune"
MAX_LINES = 420
# the bottom rows of ARCHITECTURE.md's table: what each may import (the layers above are kept in order by the
# cycle tests below)
LAYERS = {
    "errors": set(),
    "registry": {"errors"},
    "atomic": {"errors"},
    "extras": {"errors"},
    "config_checks": {"errors"},
    "config": {"errors", "config_checks"},
    "vit": {"errors"},
    "backbones": {"errors", "registry", "atomic", "extras", "config", "config_checks", "vit"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every adaptertune module ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("adaptertune")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("adaptertune"):
                mod = node.module
            else:
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x` imports submodule x
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_module_import_cycle():
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the architecture
    graph = {m: {i for i in deps if not (m.startswith(i + ".") and i != "adaptertune")} for m, deps in graph.items()}
    graph = {m: {i for i in deps if i != "adaptertune"} for m, deps in graph.items()}
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_no_folder_import_cycle():
    folders: dict[str, set[str]] = {}
    for m, deps in _graph().items():
        if m == "adaptertune":
            continue  # the root re-exports the public API
        src = _folder(m)
        folders.setdefault(src, set()).update(_folder(d) for d in deps if _folder(d) not in (src, "adaptertune"))
    assert _find_cycle(folders) is None, " -> ".join(_find_cycle(folders))


def test_bottom_layers_import_only_above():
    wrong = {
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if _folder(m) in LAYERS
        for d in deps
        if _folder(d) not in LAYERS[_folder(m)] | {_folder(m)}
    }
    assert not wrong, f"imports against ARCHITECTURE.md's layers: {sorted(wrong)}"


def test_modules_stay_small():
    big = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _defined(body: list[ast.stmt]) -> set[str]:
    """Names a module's top level defines (functions, classes, assignments, also under ``if`` / ``try``)."""
    out: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            out |= _defined(node.body + node.orelse)
    return out


def test_an_imported_name_comes_from_the_module_that_defines_it():
    """No re-export chains: ``from adaptertune.x import y`` names the module that defines ``y`` (or the
    submodule ``x.y``); a package's ``__init__`` (its face) may gather its modules' names, so it is excepted."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    faces = {m for m, p in files.items() if p.name == "__init__.py"}
    defined = {m: _defined(ast.parse(p.read_text()).body) for m, p in files.items()}
    root = PKG.parents[1]
    readers = [*PKG.rglob("*.py"), *(p for d in ("tests", "benchmarks", "scripts") for p in (root / d).rglob("*.py"))]
    wrong = []
    for path in readers:
        name = _module_name(path) if path.is_relative_to(PKG) else ""
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            mod = node.module
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            if mod not in files or mod in faces:
                continue
            wrong += [
                f"{path.relative_to(root)}:{node.lineno} takes {a.name} from {mod}"
                for a in node.names
                if a.name not in defined[mod] and f"{mod}.{a.name}" not in files
            ]
    assert not wrong, wrong


def test_all_lists_what_the_module_defines():
    """A module's ``__all__`` names its own definitions (a package's ``__init__`` gathers its modules')."""
    wrong = []
    for path in PKG.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        for node in body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                wrong += [f"{_module_name(path)}: {e.value}" for e in node.value.elts if e.value not in _defined(body)]
    assert not wrong, wrong
