"""The house rules of the layout: dependencies point down (stacks use components, components use
their shared building blocks), no two modules import each other, and each part's settings live
in the part's own room."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from stacks.config import StackConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stacks", "components", "jobs", "policies")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> Iterator[str]:
    """Project modules `path` imports, at any depth of the file (lazy imports count too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name` the
            # module itself.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.partition(".")[0] in PACKAGES:
                yield name


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: set(imported_modules(path, known)) - {name} for name, path in modules.items()}
    # A package's __init__ is not an edge of its own: `components` is only a folder here.
    for edges in graph.values():
        edges -= {package for package in PACKAGES}
    return graph


def test_components_import_nothing_from_stacks() -> None:
    upward = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                    if module.startswith("components") for target in targets
                    if target.startswith("stacks"))
    assert upward == []


def test_the_shared_building_blocks_import_no_part() -> None:
    graph = import_graph()
    upward = sorted(f"{module} imports {target}" for module, targets in graph.items()
                    if module.startswith("components.base") for target in targets
                    if target.startswith("components.") and
                    not target.startswith("components.base"))
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_in_the_project() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_circle() -> None:
    # The rule above can fail: a circle of three is found and named in order.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


PART_ROOMS = {
    "haproxy": "components.haproxy",
    "opensips": "components.opensips.settings",
    "acm_engine": "components.acm_engine",
    "dragonfly": "components.datastores",
    "yugabyte": "components.datastores",
    "clickhouse": "components.datastores",
    "monitoring": "components.monitoring",
    "compliance": "components.compliance",
}


@pytest.mark.parametrize(("field", "room"), sorted(PART_ROOMS.items()))
def test_each_parts_settings_model_sits_in_its_room(field: str, room: str) -> None:
    annotation = StackConfig.model_fields[field].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    assert annotation.__module__ == room


def test_stacks_config_defines_only_what_is_about_the_stack() -> None:
    tree = ast.parse((ROOT / "stacks" / "config.py").read_text())
    classes = sorted(node.name for node in tree.body if isinstance(node, ast.ClassDef))
    assert classes == ["KubernetesSettings", "NetworkSettings", "SecretSettings", "StackConfig",
                       "StackConfigError"]
