"""The package's layering: every import inside ``amlab`` points down the layer table of
DESIGN.md, and no module imports itself back through others (no cycles).

The table (DESIGN.md, "Layers"): each layer names the layers it may import; errors.py and
io.py sit at the bottom and every layer may import them. What a layer may import includes
what those layers may import (models may import energy, so it may import what energy
may). Every import counts: at the top of a file, inside a function (the CLI imports
lazily) or under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import amlab

PACKAGE = Path(amlab.__file__).parent

#: layer -> the layers it may import (DESIGN.md), bottom first
MAY_IMPORT: dict[str, set[str]] = {
    "base": set(),  # errors.py, io.py: torch only
    "energy": set(),
    "dynamics": {"energy"},
    "models": {"energy", "dynamics"},
    "distributed": {"models"},
    # trainable memory layers: the energies' math behind nn.Modules, beside the models
    "nn": {"models"},
    "analysis": {"models"},
    "data": set(),
    "diffusion": {"models"},
    # training joins the process group with distributed's init_group (bounded waits, amlab
    # errors) and checks the ranks agree through its all_gather
    "training": {"models", "data", "distributed"},
    "tasks": {"models", "nn", "distributed", "analysis", "data", "diffusion", "training"},
    "experiments": {"tasks"},
    # DESIGN.md names models, data and analysis; the diffusion view also exports the
    # schedules, the empirical denoiser and the sampler's test vectors, so explain reads
    # diffusion too (still nothing from tasks or experiments)
    "explain": {"models", "data", "analysis", "diffusion"},
    "cli": {"tasks", "experiments", "explain"},
    # the package's own __init__: the public names re-exported from below
    "amlab": {"models", "dynamics"},
}

#: the first part of a module's name under amlab -> its layer
LAYER_OF = {
    "errors": "base",
    "io": "base",
    "energy": "energy",
    "dynamics": "dynamics",
    "models": "models",
    "distributed": "distributed",
    "nn": "nn",
    "analysis": "analysis",
    "data": "data",
    "diffusion": "diffusion",
    "training": "training",
    "tasks": "tasks",
    "experiments": "experiments",
    "explain": "explain",
    "cli": "cli",
}


def allowed(layer: str) -> set[str]:
    """The layers ``layer`` may import: its own, base, and the closure of MAY_IMPORT."""
    seen = {layer, "base"}
    todo = list(MAY_IMPORT[layer])
    while todo:
        other = todo.pop()
        if other not in seen:
            seen.add(other)
            todo.extend(MAY_IMPORT[other])
    return seen


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "amlab"
    return LAYER_OF.get(parts[1], "unassigned")


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The amlab modules that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "amlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "amlab":
                continue
            for alias in node.names:  # `from amlab.x import y` imports module amlab.x.y
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_layer():
    unassigned = sorted(m for m in modules() if layer_of(m) == "unassigned")
    assert not unassigned, f"modules outside the layer table (add them to LAYER_OF): {unassigned}"


def test_no_import_goes_up_the_layer_table():
    upward = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in graph().items()
        for t in sorted(targets)
        if layer_of(t) not in allowed(layer_of(m))
    ]
    assert not upward, "imports against the layer table:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail(tmp_path):
    """The walk sees what it must: a cycle, an upward import, a lazy and a relative one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "models" not in allowed("energy") and "tasks" not in allowed("explain")
    assert "energy" in allowed("models") and "base" in allowed("data")
    known = modules()
    cli = imports("amlab.cli.repro", known["amlab.cli.repro"], known)
    assert "amlab.cli.common" in cli  # a plain from-import of a sibling module
    lazy = imports("amlab.cli.retrieve", known["amlab.cli.retrieve"], known)
    assert "amlab.tasks.retrieval" in lazy  # imported inside the command function
    source = (
        "from . import common\n"  # a sibling module, relatively
        "from ..tasks import retrieval\n"  # a module two levels up, relatively
        "from .. import io\n"
        "import amlab.energy.lse as lse\n"  # a dotted import under another name
    )
    (tmp_path / "fake.py").write_text(source)
    relative = imports("amlab.cli.fake", tmp_path / "fake.py", known)
    assert relative == {"amlab.cli.common", "amlab.tasks.retrieval", "amlab.io", "amlab.energy.lse"}
    (tmp_path / "__init__.py").write_text("from .common import x\nfrom . import repro\n")
    in_init = imports("amlab.cli", tmp_path / "__init__.py", known)
    assert in_init == {"amlab.cli.common", "amlab.cli.repro"}  # a package's own __init__
