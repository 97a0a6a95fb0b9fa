"""The Pulumi toolchain the set-up built: pinned versions everywhere they must agree, the
providers installed where the engine looks, and an archive that is not the pinned one refused."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.engine import REPO, TOOLCHAIN

PINS = {
    name: re.search(rf"^{name}=(\S+)", (REPO / "scripts" / "toolchain").read_text(), re.M)
    for name in ("PULUMI_VERSION", "KUBERNETES_PROVIDER_VERSION", "DOCKER_PROVIDER_VERSION")
}


def pinned(name: str) -> str:
    found = PINS[name]
    assert found is not None, name
    return found.group(1)


def test_python_packages_match_the_built_cli_and_providers() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pulumi=={pinned('PULUMI_VERSION')}" in dependencies
    assert f"pulumi-kubernetes=={pinned('KUBERNETES_PROVIDER_VERSION')}" in dependencies
    assert f"pulumi-docker=={pinned('DOCKER_PROVIDER_VERSION')}" in dependencies
    assert version("pulumi") == pinned("PULUMI_VERSION")
    assert version("pulumi-kubernetes") == pinned("KUBERNETES_PROVIDER_VERSION")
    assert version("pulumi-docker") == pinned("DOCKER_PROVIDER_VERSION")


def test_the_wrapper_runs_the_pinned_cli_with_both_providers_installed() -> None:
    wrapper = REPO / "scripts" / "pulumi"
    printed = subprocess.run([wrapper, "version"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == f"v{pinned('PULUMI_VERSION')}"
    listed = subprocess.run([wrapper, "plugin", "ls", "--json"], capture_output=True,
                            text=True, check=True)
    plugins = {(p["name"], p["kind"], p["version"]) for p in json.loads(listed.stdout)}
    # Exactly the pinned providers: the language host's wish for another docker version must
    # never send the engine looking for a plugin it cannot have.
    assert plugins == {("kubernetes", "resource", pinned("KUBERNETES_PROVIDER_VERSION")),
                       ("docker", "resource", pinned("DOCKER_PROVIDER_VERSION"))}


@pytest.mark.parametrize("script", ["toolchain", "opensips"])
def test_an_archive_that_is_not_the_pinned_one_is_refused(script: str, tmp_path: Path) -> None:
    shared = REPO.parent / "shared" / "third-party"
    third_party = tmp_path / "third-party"
    shutil.copytree(shared, third_party)
    for archive in third_party.glob("*.tar.xz"):
        archive.chmod(0o644)
        with archive.open("ab") as tampered:
            tampered.write(b"\0")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    answer = subprocess.run(
        [REPO / "scripts" / script, "build"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/local/go/bin:/usr/bin:/bin", "HOME": str(tmp_path),
             "TMPDIR": str(scratch), "ACM_THIRD_PARTY": str(third_party),
             "ACM_TOOLS_CACHE": str(tmp_path / "cache")})
    assert answer.returncode != 0
    assert "refusing to build from it" in answer.stderr, answer.stderr
    assert not list((tmp_path / "cache").rglob("bin"))
    assert not list(scratch.iterdir()), "the unpacked sources were left behind"


def test_toolchain_env_points_the_engine_at_the_project_home() -> None:
    printed = subprocess.run([TOOLCHAIN, "env"], capture_output=True, text=True,
                             check=True).stdout
    assert f'PULUMI_HOME="{REPO}/.state/pulumi"' in printed
    assert "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true" in printed
    assert "PULUMI_SKIP_UPDATE_CHECK=true" in printed
