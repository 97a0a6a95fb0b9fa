"""The compliance job image, built from jobs/Dockerfile by pulumi-docker for stacks that
have a registry. Tagged by the content of what goes into it, so the tag is pinned (a CronJob
never runs "whatever :latest is today") and changes exactly when the job's code does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_docker as docker

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
IMAGE_INPUTS = ("jobs",)


def content_tag(root: Path = REPOSITORY_ROOT) -> str:
    digest = hashlib.sha256()
    for top in IMAGE_INPUTS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_job_image(name: str, registry: str, parent: pulumi.Resource | None = None,
                    opts: pulumi.ResourceOptions | None = None) -> tuple[docker.Image, str]:
    reference = f"{registry}/ncc-compliance:{content_tag()}"
    image = docker.Image(
        name,
        image_name=reference,
        build=docker.DockerBuildArgs(context=str(REPOSITORY_ROOT),
                                     dockerfile=str(REPOSITORY_ROOT / "jobs" / "Dockerfile"),
                                     platform="linux/amd64"),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=parent)),
    )
    return image, reference
