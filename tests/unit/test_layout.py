"""The package's layering, read from its source with `ast` (every import, at module level or inside a
function): the rules of ../shared/DESIGN.md that keep data, models, training and inference apart."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "omnigpt"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports_of(path: Path) -> set[str]:
    """The omnigpt modules a file imports (a `from X import name` counts X.name when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("omnigpt"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("omnigpt")}
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_graph_is_read():
    assert "omnigpt.data.inputs" in GRAPH["omnigpt.data.training"]
    assert "omnigpt.checkpoint" in GRAPH["omnigpt.train.trainer"]


def test_no_import_loops():
    """Packages' __init__ files aside (they gather names), no module reaches itself through its imports."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()]:
                if nxt not in seen and not MODULES[nxt].name == "__init__.py":
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(m for m in GRAPH if MODULES[m].name != "__init__.py" and m in reach(m))
    assert loops == []


def test_training_imports_no_inference_evaluation_plotting_or_cli():
    banned = ("omnigpt.evaluate", "omnigpt.viz", "omnigpt.generate", "omnigpt.cli", "omnigpt.chat",
              "omnigpt.transcribe", "omnigpt.recipes")
    bad = {m: sorted(i for i in GRAPH[m] if within(i, *banned)) for m in GRAPH if within(m, "omnigpt.train")}
    assert {m: i for m, i in bad.items() if i} == {}


def test_inference_and_evaluation_import_nothing_from_training():
    users = ("omnigpt.evaluate", "omnigpt.generate", "omnigpt.chat", "omnigpt.transcribe", "omnigpt.viz")
    bad = {m: sorted(i for i in GRAPH[m] if within(i, "omnigpt.train")) for m in users}
    assert {m: i for m, i in bad.items() if i} == {}


def test_data_imports_no_models_or_training():
    bad = {m: sorted(i for i in GRAPH[m] if within(i, "omnigpt.model", "omnigpt.train", "omnigpt.recipes"))
           for m in GRAPH if within(m, "omnigpt.data")}
    assert {m: i for m, i in bad.items() if i} == {}


def test_models_import_only_the_config_and_each_other():
    bad = {m: sorted(i for i in GRAPH[m] if not within(i, "omnigpt.model", "omnigpt.config"))
           for m in GRAPH if within(m, "omnigpt.model")}
    assert {m: i for m, i in bad.items() if i} == {}


def test_featurizing_is_built_in_one_place():
    """Image transforms and log-mel settings are made from a config in data/inputs.py alone."""
    sites = {name: [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                    and getattr(n.func, "id", getattr(n.func, "attr", None)) in ("ImageTransform", "MelConfig")]
             for name, path in MODULES.items() if name not in ("omnigpt.data.image", "omnigpt.data.audio")}
    assert sorted(name for name, calls in sites.items() if calls) == ["omnigpt.data.inputs"]
