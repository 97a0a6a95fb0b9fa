"""Shared fixtures: each stack rendered once per test session, under Pulumi's mocks."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stacks.render import Rendering, render_stack, render_values
from stacks.stack_files import STACKS, read_stack_file
from tests.engine import Engine

_RENDERINGS: dict[str, Rendering] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--smoke-plan", dest="smoke_plan", default=None,
                     help="run the smoke suite (tests/smoke) against the hosts of this plan")


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    # The smoke suite checks a live environment; the test command runs it through its
    # self-test (tests/test_smoke_suite.py), which passes a plan.
    if "smoke" in collection_path.parts and not config.getoption("smoke_plan"):
        return True
    return None


FIRST_DEPLOYMENT = "tests/cluster/test_first_local_up.py"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # The test command's first deployment is the main command a new user runs, from an empty
    # registry: before anything else of the session has built, pushed or deployed.
    first = [item for item in items if item.nodeid.startswith(FIRST_DEPLOYMENT)]
    items[:] = first + [item for item in items if not item.nodeid.startswith(FIRST_DEPLOYMENT)]


def rendering_of(stack: str) -> Rendering:
    if stack not in _RENDERINGS:
        _RENDERINGS[stack] = render_stack(stack)
    return _RENDERINGS[stack]


@pytest.fixture(scope="session")
def prod() -> Rendering:
    return rendering_of("prod")


@pytest.fixture(scope="session")
def local() -> Rendering:
    return rendering_of("local")


@pytest.fixture(scope="session", params=STACKS)
def any_stack(request: pytest.FixtureRequest) -> Rendering:
    return rendering_of(request.param)


def stack_values(stack: str) -> tuple[dict[str, Any], frozenset[str]]:
    values, secret_keys = read_stack_file(stack)
    return copy.deepcopy(values), secret_keys


def render_modified(stack: str, path: str, value: Any) -> Rendering:
    """Render `stack` with one config value changed (dotted path, list indexes as ints)."""
    values, secret_keys = stack_values(stack)
    set_path(values, path, value)
    return render_values(stack, values, secret_keys)


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = document
    for part in parts[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]
    target[parts[-1]] = value


def delete_path(document: dict[str, Any], path: str) -> None:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = document
    for part in parts[:-1]:
        target = target[part]
    del target[parts[-1]]


REPO = Path(__file__).resolve().parent.parent
CONTROL_PLANE = REPO / "scripts" / "control-plane"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Path]:
    """The local control plane (scripts/control-plane): started for the session, then stopped.

    One that was already running (a developer's) is used and left running.
    """
    was_running = subprocess.run([CONTROL_PLANE, "status"], capture_output=True).returncode == 0
    if not was_running:
        subprocess.run([CONTROL_PLANE, "start"], check=True)
    try:
        yield REPO / ".state" / "kubeconfig"
    finally:
        if not was_running:
            subprocess.run([CONTROL_PLANE, "stop"], check=True)


@pytest.fixture(scope="session")
def engine(control_plane: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The pinned Pulumi CLI on this repository, with a state backend of the session's own and
    the local control plane as every stack's cluster."""
    return Engine(tmp_path_factory.mktemp("pulumi-state"), control_plane)
