"""Images the platform builds itself, by pulumi-docker, for stacks that name a registry: the
compliance job (jobs/Dockerfile) and OpenSIPS with exactly the modules its config loads
(images/opensips/Dockerfile). Each is tagged by the content of what goes into it, so the tag
is pinned (nothing runs "whatever :latest is today") and changes exactly when its inputs do."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ImageRecipe:
    repository: str  # the name under the registry
    dockerfile: str  # relative to the repository root, which is the build context
    inputs: tuple[str, ...]  # folders whose content makes the tag


JOB_IMAGE = ImageRecipe("ncc-compliance", "jobs/Dockerfile", ("jobs",))
OPENSIPS_IMAGE = ImageRecipe("opensips", "images/opensips/Dockerfile", ("images/opensips",))


def content_tag(root: Path = REPOSITORY_ROOT, inputs: tuple[str, ...] = JOB_IMAGE.inputs) -> str:
    digest = hashlib.sha256()
    for top in inputs:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_image(name: str, recipe: ImageRecipe, registry: str,
                opts: pulumi.ResourceOptions | None = None) -> tuple[docker.Image, str]:
    reference = f"{registry}/{recipe.repository}:{content_tag(inputs=recipe.inputs)}"
    image = docker.Image(
        name,
        image_name=reference,
        build=docker.DockerBuildArgs(context=str(REPOSITORY_ROOT),
                                     dockerfile=str(REPOSITORY_ROOT / recipe.dockerfile),
                                     platform="linux/amd64"),
        opts=opts,
    )
    return image, reference


def build_job_image(name: str, registry: str, parent: pulumi.Resource | None = None,
                    opts: pulumi.ResourceOptions | None = None) -> tuple[docker.Image, str]:
    return build_image(name, JOB_IMAGE, registry,
                       pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=parent)))
