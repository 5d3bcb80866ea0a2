"""The house rules of docs/architecture.md, measured on the source (issue 22), so a change that breaks one
fails here instead of in a review: layers only import downwards, no import cycles, no private name is
imported across modules, no function over 60 lines (argparse construction aside), none with more than 8
parameters, and one training step loop.
"""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "medtransfer"

# Each top-level room of the package and its layer: a module may import its own layer and the ones below.
LAYERS = {
    0: {"errors", "kinds", "durations", "schedules", "xrv_weights", "config", "budget", "parallel"},
    1: {"data", "models", "evaluate", "run_folder"},
    2: {"train"},
    3: {"runs", "radiomics", "tracking"},
    4: {"study", "inference"},
    5: {"report"},
    6: {"advise"},
    7: {"cli", "api", "__init__"},   # the package itself is the Python API's front door (import medtransfer as mt)
}
LAYER_OF = {room: layer for layer, rooms in LAYERS.items() for room in rooms}
LONG_ALLOWED = {("cli.py", "build_parser")}   # argparse construction reads best as one list of options
MAX_LINES, MAX_PARAMS = 60, 8


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool):
    """(imported module, imported name or None) for every import of the project's own modules."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:   # a module-level `if TYPE_CHECKING:` / try block still runs at import time
        nodes = [n for stmt in nodes for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef,
                                                                                       ast.AsyncFunctionDef))]
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield (full, None) if full in MODULES else (module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _own(module: str) -> bool:
    return module == "medtransfer" or module.startswith("medtransfer.")


def test_every_room_has_a_layer():
    rooms = {_room(m) for m in MODULES}
    assert rooms <= set(LAYER_OF), f"rooms without a layer (add them to LAYERS and docs/architecture.md): " \
                                   f"{sorted(rooms - set(LAYER_OF))}"


def test_no_import_runs_upward():
    upward = []
    for name, path in MODULES.items():
        for module, _ in _imports(name, path, top_level_only=False):
            if _own(module) and LAYER_OF.get(_room(module), -1) > LAYER_OF.get(_room(name), 99):
                upward.append(f"{name} -> {module}")
    assert not upward, upward


def test_no_import_cycles():
    graph = defaultdict(set)
    for name, path in MODULES.items():
        for module, _ in _imports(name, path, top_level_only=True):
            if _own(module) and module != name and module in MODULES:
                graph[name].add(module)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in list(MODULES):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its submodules is not a cycle: the submodule is loaded first
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, real


def test_no_private_name_is_imported_across_modules():
    shared = [f"{name} imports {module}.{what}" for name, path in MODULES.items()
              for module, what in _imports(name, path, top_level_only=False)
              if _own(module) and what and what.startswith("_") and not what.startswith("__")]
    assert not shared, shared


def _functions():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE).as_posix(), node


def test_no_function_is_longer_than_60_lines():
    long = [f"{where}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for where, node in _functions()
            if node.end_lineno - node.lineno + 1 > MAX_LINES and (where, node.name) not in LONG_ALLOWED]
    assert not long, long


def test_no_function_takes_more_than_8_parameters():
    def count(args: ast.arguments) -> int:
        named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        return len(named) + bool(args.vararg) + bool(args.kwarg)

    wide = [f"{where}:{node.lineno} {node.name} ({count(node.args)} parameters)"
            for where, node in _functions() if count(node.args) > MAX_PARAMS]
    assert not wide, wide


@pytest.mark.parametrize("needle", ["optimizer.step(", ".backward("])
def test_one_step_loop(needle):
    """Ordinary, packed and LR-range-test training step through one loop: one file calls backward / step."""
    files = sorted({p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if needle in p.read_text()})
    assert len(files) <= 1, files


def test_a_backbone_family_is_one_file():
    """docs/architecture.md: every models/*_family.py registers itself when the package is imported; nothing
    lists the families by name, so a new family is one new file."""
    import medtransfer.models as models

    on_disk = sorted(p.stem for p in (PACKAGE / "models").glob("*_family.py"))
    assert models.FAMILY_MODULES == on_disk and len(on_disk) >= 2
    init = (PACKAGE / "models" / "__init__.py").read_text()
    assert not [name for name in on_disk if name in init]
