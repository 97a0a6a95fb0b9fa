"""Offline render: run a stack's program under Pulumi's mocks and capture every object.

No cluster and no Pulumi CLI: the mocks record what the program registers, exactly as the
engine would receive it, and `write_rendering` turns that into reviewable files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.base.kube import RENDERED_CONFIG_LABEL
from stacks.config import PROJECT, StackConfig, load_stack_config
from stacks.platform import build_platform
from stacks.stack_files import ROOT as STACK_ROOT
from stacks.stack_files import read_stack_file

# Apply order: what others refer to comes first (namespace before its contents, config and
# secrets before the pods that mount them, workloads before what scales or guards them).
APPLY_ORDER = (
    "Namespace", "PriorityClass", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding",
    "Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment",
    "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget",
)
_SECRET_SENTINEL = "4dabf18193072939515e22adb298388d"


@dataclass(frozen=True)
class RegisteredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None


@dataclass
class Rendering:
    stack: str
    config: StackConfig
    resources: list[RegisteredResource]
    program_seconds: float
    manifests: list[dict[str, Any]] = field(default_factory=list)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for manifest in self.manifests:
            if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
                return manifest
        raise KeyError(f"no {kind} named {name!r}")

    def rendered_files(self) -> dict[str, str]:
        """Every rendered config file by name: ConfigMaps' data, and the credential files
        of rendered Secrets (offline they hold `<secret acm-platform:KEY>` placeholders)."""
        files: dict[str, str] = {}
        for manifest in self.objects("ConfigMap") + self.objects("Secret"):
            if manifest["metadata"].get("labels", {}).get(RENDERED_CONFIG_LABEL) != "true":
                continue
            data = manifest.get("data") if manifest["kind"] == "ConfigMap" else {
                key: text for key, text in manifest.get("stringData", {}).items()
                if key.endswith(".cfg")}
            for key, text in (data or {}).items():
                if key in files and files[key] != text:
                    raise ValueError(f"two rendered ConfigMaps both hold a file named {key!r}")
                files[key] = text
        return files


def plain(value: Any) -> Any:
    """Engine wire values as plain YAML: secrets unwrapped, whole floats back to ints."""
    if isinstance(value, dict):
        if value.get(_SECRET_SENTINEL) is not None and "value" in value:
            return plain(value["value"])
        return {key: plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[RegisteredResource] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = plain(dict(args.inputs))
        self.resources.append(RegisteredResource(args.typ, args.name, inputs, None))
        return f"{args.name}-id", inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def kubernetes_manifests(resources: list[RegisteredResource]) -> list[dict[str, Any]]:
    objects = [r for r in resources if r.type.startswith("kubernetes:")
               and not r.type.startswith("kubernetes:helm")]
    manifests = []
    for resource in objects:
        manifest = dict(resource.inputs)
        if "metadata" not in manifest or "name" not in manifest["metadata"]:
            raise ValueError(f"{resource.type} {resource.name} has no metadata.name")
        if manifest.get("kind") not in APPLY_ORDER:
            raise ValueError(f"{manifest.get('kind')} has no place in APPLY_ORDER")
        ordered = {"apiVersion": manifest.pop("apiVersion"), "kind": manifest.pop("kind"),
                   "metadata": manifest.pop("metadata"), **manifest}
        manifests.append(ordered)
    # Deterministic for diffs: apply order by kind, then namespace and name.
    return sorted(
        manifests,
        key=lambda m: (APPLY_ORDER.index(m["kind"]), m["metadata"].get("namespace", ""),
                       m["metadata"]["name"]),
    )


def render_config(stack: str, config: StackConfig) -> Rendering:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    started = time.perf_counter()

    def program() -> None:
        build_platform(config, instance=stack)

    _sync_await(run_pulumi_func(program))
    elapsed = time.perf_counter() - started
    rendering = Rendering(stack, config, list(mocks.resources), elapsed)
    rendering.manifests = kubernetes_manifests(rendering.resources)
    return rendering


def render_values(stack: str, values: Mapping[str, Any], secret_keys: frozenset[str]) -> Rendering:
    return render_config(stack, load_stack_config(stack, values, secret_keys))


def render_stack(stack: str, root: Path | None = None) -> Rendering:
    """The stack as the engine would receive it, offline: secrets stay placeholders."""
    values, secret_keys = read_stack_file(stack, root or STACK_ROOT)
    return render_values(stack, values, secret_keys)


def _file_stem(index: int, manifest: Mapping[str, Any]) -> str:
    return f"{index:03d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}"


def write_rendering(rendering: Rendering, out: Path) -> None:
    manifests_dir = out / "manifests"
    config_dir = out / "config"
    for directory in (manifests_dir, config_dir):
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            if stale.is_file():
                stale.unlink()
    for index, manifest in enumerate(rendering.manifests, start=1):
        text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=100)
        (manifests_dir / f"{_file_stem(index, manifest)}.yaml").write_text(text)
    for name, text in sorted(rendering.rendered_files().items()):
        (config_dir / name).write_text(text)
