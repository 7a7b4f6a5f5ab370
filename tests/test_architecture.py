"""The package's data flow: models -> export -> artifact -> runtimes -> evaluation -> commands, one way.

Every import in segdeploy (module level and inside functions) is read from the source, mapped to the part of the
pipeline it belongs to, and checked against the allowed dependencies below; a module-level cycle anywhere fails too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import segdeploy

ROOT = Path(segdeploy.__file__).parent

# part -> the parts it may import (besides itself). A DAG, so no two parts can import each other.
ALLOWED = {
    "core": set(),
    "datasets": {"core"},
    "models": {"core"},
    "training": {"core", "datasets", "models"},
    "artifact": {"core"},
    "export": {"core", "models", "artifact"},
    "runtimes": {"core", "models", "artifact"},
    "evaluation": {"core", "datasets", "models", "artifact", "export", "runtimes"},
    "commands": {"core", "datasets", "models", "training", "artifact", "export", "runtimes", "evaluation"},
}
ENTRY_POINTS = {"segdeploy.cli", "segdeploy.__main__"}  # the command line's dispatch belongs to commands
CORE_PACKAGES = {"files"}  # packages of the core: every part may use them


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    if module in ENTRY_POINTS:
        return "commands"
    pieces = module.split(".")
    if len(pieces) > 1 and (ROOT / pieces[1]).is_dir() and pieces[1] not in CORE_PACKAGES:
        return pieces[1]
    return "core"


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(target: str) -> str | None:
    """The segdeploy module an import names (``from a import b``: a.b when that is a module, else a)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):  # every scope: function-level imports count too
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "segdeploy":
                resolved = resolve(name)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_import_follows_the_data_flow():
    wrong = []
    for module, targets in GRAPH.items():
        source = part_of(module)
        for target in targets:
            dest = part_of(target)
            if dest != source and dest not in ALLOWED[source]:
                wrong.append(f"{module} ({source}) imports {target} ({dest})")
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    def edges(module):
        return {t for t in GRAPH[module] if not module.startswith(t + ".")}

    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in edges(module):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports():
    """Guard against a checker that passes because it reads nothing."""
    assert "segdeploy.evaluation.validate" in GRAPH["segdeploy.commands.export"]  # imported inside run()
    assert part_of("segdeploy.runtimes.torch") == "runtimes" and part_of("segdeploy.files.atomic") == "core"
    assert {"segdeploy.models.deploy", "segdeploy.artifact.manifest"} <= {
        t for m, ts in GRAPH.items() if m.startswith("segdeploy.runtimes") for t in ts}


# One place for each fact: a backend's name is spelled by the backend registry, the flavour table and the backends'
# own modules; an artifact's suffix by the format table. Everything else asks them.
BACKEND_NAMES = {"torch", "onnxruntime", "openvino", "tensorrt"}
ARTIFACT_SUFFIXES = {".onnx", ".engine", ".plan"}
SPELL_BACKEND_NAMES = {"segdeploy.backends", "segdeploy.flavours", "segdeploy.tensorrt_host",
                       "segdeploy.runtimes.torch", "segdeploy.runtimes.onnxruntime", "segdeploy.runtimes.openvino",
                       "segdeploy.runtimes.tensorrt"}
SPELL_SUFFIXES = {"segdeploy.artifact.formats"}
MAX_FUNCTION_LEVEL_IMPORTS = 53  # the rest pull torch or onnx, which stay lazy (tests/test_startup.py)
MAX_MODULE_LINES = 400


def string_constants(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def function_level_imports(module: str) -> int:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    count = 0
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("segdeploy")):
                    count += 1
                elif isinstance(node, ast.Import) and any(a.name.startswith("segdeploy") for a in node.names):
                    count += 1
    return count


def test_backend_names_are_spelled_in_the_registries_only():
    spelled = {m for m in MODULES if BACKEND_NAMES & string_constants(m)}
    assert spelled <= SPELL_BACKEND_NAMES, "ask segdeploy.backends (or the flavour table) instead of spelling a " \
        f"backend's name: {sorted(spelled - SPELL_BACKEND_NAMES)}"


def test_artifact_suffixes_are_spelled_in_the_format_table_only():
    spelled = {m for m in MODULES if ARTIFACT_SUFFIXES & string_constants(m)}
    assert spelled <= SPELL_SUFFIXES, f"ask segdeploy.artifact.formats instead: {sorted(spelled - SPELL_SUFFIXES)}"


def test_function_level_imports_do_not_grow():
    total = sum(function_level_imports(m) for m in MODULES)
    assert total <= MAX_FUNCTION_LEVEL_IMPORTS, f"{total} segdeploy imports inside functions (at most " \
        f"{MAX_FUNCTION_LEVEL_IMPORTS}): import at the top unless the module pulls a heavy package"


def test_no_module_is_long():
    lines = {m: p.read_text(encoding="utf-8").count("\n") for m, p in MODULES.items()}
    long = {m: n for m, n in lines.items() if n > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


def test_the_fact_checkers_read_something():
    assert "tensorrt" in string_constants("segdeploy.backends") and ".onnx" in string_constants(
        "segdeploy.artifact.formats")
    assert function_level_imports("segdeploy.commands.export") > 0
