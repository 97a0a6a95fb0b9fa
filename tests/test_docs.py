"""The documentation stays true: links resolve, named paths exist, named commands answer
`--help`, named settings exist in the stack models, and docs/settings.md is what the models
print today."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from stacks.settings_reference import settings_reference, stack_settings
from tests.conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
TOP_LEVEL = ("stacks", "components", "templates", "jobs", "policies", "tests", "scripts", "docs",
             "images", "benchmarks", ".github", ".ci")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.|STACK|KEY|\bFILE\b|\bDIR\b")
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])(?:\./)?((?:" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")/[\w./-]*)")
COMMAND = re.compile(r"(?<![\w/.-])(?:\./|\.venv/bin/)?(scripts/[\w-]+|acmctl|ncc-report)"
                     r"(?:\s+([a-z][\w-]*))?")
SETTING = re.compile(r"acm-platform:([a-zA-Z][\w.\[\]]*)")


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def code_of(text: str) -> list[str]:
    """Inline code and fenced blocks: where the docs name paths, commands and settings."""
    return CODE.findall(FENCE.sub("", text)) + FENCE.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page_id(page)} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page: Path) -> None:
    missing = []
    for code in code_of(page.read_text()):
        for match in REPOSITORY_PATH.finditer(code):
            path = match.group(1).split("::")[0].rstrip(".,:;")
            if PLACEHOLDER.search(path) or not path:
                continue
            if not (REPO / path).exists():
                missing.append(path)
    assert not missing, f"{page_id(page)} names paths the repository does not have: {missing}"


# The console scripts of pyproject.toml, run as modules of this checkout.
CONSOLE_SCRIPTS = {"acmctl": "stacks.cli", "ncc-report": "jobs.cli"}


def invocation(program: str) -> list[str]:
    if program.startswith("scripts/"):
        return [str(REPO / program)]
    return [sys.executable, "-m", CONSOLE_SCRIPTS[program]]


@cache
def answers_help(command: tuple[str, ...]) -> str | None:
    """None when `COMMAND --help` exits 0, else what it printed."""
    program, *rest = command
    run = subprocess.run([*invocation(program), *rest, "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO, check=False)
    return None if run.returncode == 0 else (run.stdout + run.stderr)[-500:]


def test_the_console_scripts_are_the_modules_checked() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {name: target.split(":")[0] for name, target in declared.items()
            if name in CONSOLE_SCRIPTS} == CONSOLE_SCRIPTS


@cache
def subcommands(program: str) -> set[str]:
    if program.startswith("scripts/"):
        return set()
    usage = subprocess.run([*invocation(program), "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    listed = re.search(r"\{([\w,-]+)\}", usage)
    assert listed is not None, usage
    return set(listed.group(1).split(","))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_named_answers_help(page: Path) -> None:
    failing = {}
    for code in code_of(page.read_text()):
        for match in COMMAND.finditer(code):
            program, word = match.group(1), match.group(2)
            command: tuple[str, ...] = (program,)
            if word is not None and word in subcommands(program):
                command = (program, word)
            elif word is not None and not program.startswith("scripts/") and word.isalpha() \
                    and program == "ncc-report" and word not in subcommands(program):
                failing[f"{program} {word}"] = "no such subcommand"
                continue
            complaint = answers_help(command)
            if complaint is not None:
                failing[" ".join(command)] = complaint
    assert not failing, f"{page_id(page)} names commands that do not answer --help: {failing}"


def documented_paths() -> set[str]:
    return {re.sub(r"\[\]|\([A-Za-z]+\)|\.<name>", "", setting.path)
            for setting in stack_settings()}


def settings_named(text: str) -> list[str]:
    """`acm-platform:KEY` anywhere, and inline code that starts with a stack file's top-level
    key and a dot (`opensips.loadShedding.callsPerSecond`), file names aside."""
    tops = {setting.path.split(".")[0] for setting in stack_settings()} - {"kubernetes"}
    named = SETTING.findall(text)
    for code in CODE.findall(FENCE.sub("", text)):
        dotted = re.fullmatch(r"([a-z][A-Za-z]*)((?:\.[a-z][A-Za-z0-9]*)+)(?:\.\*)?(?::.*)?", code)
        if dotted and dotted.group(1) in tops and not re.search(
                r"\.(cfg|ya?ml|py|j2|md|json|conf|sql|pem|csv)$", dotted.group(0)):
            named.append(dotted.group(1) + dotted.group(2))
    return named


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_setting_named_exists_in_the_models(page: Path) -> None:
    known = documented_paths()
    unknown = []
    for key in settings_named(page.read_text()):
        key = re.sub(r"\[\d*\]", "", key).rstrip(".")
        if key in ("KEY",) or PLACEHOLDER.search(key):
            continue
        if key not in known:
            unknown.append(key)
    assert not unknown, f"{page_id(page)} names settings the models do not have: {unknown}"


def test_the_settings_reference_is_what_the_models_print() -> None:
    committed = (REPO / "docs" / "settings.md").read_text()
    assert committed == settings_reference(), (
        "docs/settings.md is stale: run .venv/bin/acmctl settings-reference --out docs/settings.md")


def test_every_setting_of_the_models_is_described() -> None:
    undescribed = [setting.path for setting in stack_settings() if not setting.description]
    assert not undescribed, f"settings without a docstring in their model: {undescribed}"


def test_the_checks_catch_a_broken_link_a_missing_path_and_a_stale_reference(
        tmp_path: Path) -> None:
    page = REPO / "docs" / "_probe.md"
    page.write_text("[gone](nowhere.md) and `components/no_such_part.py` and "
                    "`acm-platform:opensips.noSuchKey` and `haproxy.noSuchKnob`\n")
    try:
        with pytest.raises(AssertionError, match=re.escape("nowhere.md")):
            test_every_relative_link_resolves(page)
        with pytest.raises(AssertionError, match=re.escape("components/no_such_part.py")):
            test_every_repository_path_named_exists(page)
        with pytest.raises(AssertionError,
                           match=re.escape("['opensips.noSuchKey', 'haproxy.noSuchKnob']")):
            test_every_setting_named_exists_in_the_models(page)
    finally:
        page.unlink()
    assert settings_reference().replace("CPU and memory", "CPU") != settings_reference()


def test_the_readme_is_a_front_page() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move detail into docs/"
