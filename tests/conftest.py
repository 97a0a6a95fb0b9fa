"""Shared fixtures: each stack rendered once per test session, under Pulumi's mocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.render import Rendering, render_stack, render_values
from stacks.stack_files import STACKS, read_stack_file

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
