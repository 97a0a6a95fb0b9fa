"""The real Pulumi engine for the tests: the pinned CLI and providers (scripts/toolchain) driven
through the Automation API, with a LocalWorkspace on this repository and a state backend of the
test session's own, so a test never touches a developer's stacks."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

REPO = Path(__file__).resolve().parent.parent
TOOLCHAIN = REPO / "scripts" / "toolchain"
DEMO_STACK_SECRET = REPO / "stacks" / "demo-stack-secret"
POLICY_PACK = REPO / "policies"


def toolchain_environment() -> dict[str, str]:
    """What `scripts/toolchain env` exports, as a dict (PATH with the pinned CLI first)."""
    printed = subprocess.run([TOOLCHAIN, "env"], capture_output=True, text=True, check=True)
    environment: dict[str, str] = {}
    for line in printed.stdout.splitlines():
        match = re.fullmatch(r'export (\w+)="(.*)"', line.strip())
        if match is None:
            match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        assert match is not None, line
        name, value = match.groups()
        environment[name] = value.replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    return environment


def docker_host() -> str:
    printed = subprocess.run([REPO / "scripts" / "images", "env"], capture_output=True,
                             text=True, check=True).stdout.strip()
    return printed.removeprefix("export DOCKER_HOST=")


def cli_root() -> Path:
    """The folder above the CLI's `bin/` (what the Automation API's PulumiCommand wants)."""
    printed = subprocess.run([TOOLCHAIN, "bin"], capture_output=True, text=True, check=True)
    return Path(printed.stdout.strip()).parent


class Engine:
    """Stacks of this repository on one state backend and one cluster."""

    def __init__(self, backend: Path, kubeconfig: Path | None) -> None:
        environment = toolchain_environment()
        self.pulumi_home = environment.pop("PULUMI_HOME")
        self.env = {
            **environment,
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(DEMO_STACK_SECRET),
        }
        # The programs find the images' build contexts in the tools cache: the CLI must see
        # the same cache as the Automation API (which passes the whole environment on), or
        # every preview after an up shows the images as changed (CI gives the set-up a cache
        # of its own).
        if "ACM_TOOLS_CACHE" in os.environ:
            self.env["ACM_TOOLS_CACHE"] = os.environ["ACM_TOOLS_CACHE"]
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)
            # The local stack's images are built by pulumi-docker with the project's dockerd,
            # which scripts/control-plane starts with the cluster.
            self.env["DOCKER_HOST"] = docker_host()
        backend.mkdir(parents=True, exist_ok=True)
        self.command = auto.PulumiCommand(root=str(cli_root()))

    def workspace(self) -> auto.LocalWorkspace:
        return auto.LocalWorkspace(work_dir=str(REPO), pulumi_home=self.pulumi_home,
                                   env_vars=dict(self.env), pulumi_command=self.command)

    def stack(self, name: str) -> auto.Stack:
        return auto.create_or_select_stack(
            stack_name=name, work_dir=str(REPO),
            opts=auto.LocalWorkspaceOptions(pulumi_home=self.pulumi_home,
                                            env_vars=dict(self.env),
                                            pulumi_command=self.command))

    def cli_env(self) -> dict[str, str]:
        return {**self.env, "PULUMI_HOME": self.pulumi_home}

    def cli(self, *arguments: str, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI itself, as a user types it from the repository root."""
        return subprocess.run(
            [str(cli_root() / "bin" / "pulumi"), *arguments, "--non-interactive"],
            cwd=REPO, env={**self.cli_env(), **(env or {})}, capture_output=True, text=True,
            timeout=timeout, check=False)


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose API server is a loopback port where nothing listens."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        "clusters: [{name: gone, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: gone, user: {token: none}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: gone}}]\n")
    return path


def policy_config(stack: str) -> str:
    return str(POLICY_PACK / "enforcement" / f"{stack}.json")


def stack_document(stack: str) -> dict[str, Any]:
    """A stack file as YAML data (its secrets stay sealed), to write changed copies of."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return copy.deepcopy(loaded)


def write_stack_document(document: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=100))
    return path


def changes(summary: dict[str, int] | None, *kinds: str) -> int:
    """How many resources an operation's summary counts under the given kinds."""
    return sum((summary or {}).get(kind, 0) for kind in kinds)


CHANGING = ("create", "update", "delete", "replace", "create-replacement",
            "delete-replaced")
