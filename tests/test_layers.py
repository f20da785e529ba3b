"""The module import graph (every ``import imgcls...``, function-level ones included) has no cycles and
points one way: core < data, models < plan < engine < report < commands < api < cli (docs/ARCHITECTURE.md)."""

import ast
from pathlib import Path

import imgcls

SRC = Path(imgcls.__file__).parent
# Each layer is a folder (plan.py alone is one module): `ls src/imgcls` shows the architecture.
LAYERS = ["core", "data|models", "plan", "engine", "report", "commands", "api", "cli"]
FOLDERS = {"core": 0, "data": 1, "models": 1, "plan": 2, "engine": 3, "report": 4, "commands": 5, "api": 6}
FOLDERS |= {"": 6, "cli": 7, "__main__": 7}  # the package's __init__ is the API's front door
# The registry imports its builder modules to fill itself, and they import its decorator: plugin registration.
PLUGIN_CYCLE = {
    "models.registry",
    "models.attn_cnn",
    "models.ensemble",
    "models.timm_models",
    "models.torchvision_models",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(dotted: str) -> str | None:
        name = dotted.removeprefix("imgcls").lstrip(".")
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("imgcls")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("imgcls"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {owner(t) for t in targets} - {None, name, ""}
        graph[name] = deps
    return graph


def layer(module: str) -> int:
    return FOLDERS[module.split(".")[0]]


def test_every_module_has_a_layer():
    for name in _modules():
        layer(name)  # a new top-level module or folder must be placed in LAYERS


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} ({LAYERS[layer(m)]}) imports {d} ({LAYERS[layer(d)]})"
        for m, deps in _graph().items()
        for d in deps
        if layer(d) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_data_and_models_do_not_import_each_other():
    crossing = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for d in deps
        if m and layer(m) == layer(d) == 1 and m.split(".")[0] != d.split(".")[0]
    ]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 and not component <= PLUGIN_CYCLE:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_checker_sees_function_level_imports(tmp_path):
    # compare imports the report builder inside a function; the graph must contain that edge.
    assert "report.build" in _graph()["commands.compare"]
