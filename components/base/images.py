"""Images the platform builds itself, by pulumi-docker, for stacks whose parts say
`imageBuild` (a registry to push to, and the Debian base to build from): the compliance job,
OpenSIPS from its pinned source, and, where the upstream images cannot be had (the local stack
has no public registry), HAProxy, Prometheus, the dispatcher-sync sidecar's Python and the
stand-ins (Redis for Dragonfly, PostgreSQL for YugabyteDB's YSQL, SIPp for the ACM engine and
the media gateway). Each is tagged by the content of what goes into it, so the tag is pinned
(nothing runs "whatever :latest is today") and changes exactly when its inputs do.

Images are built by `pulumi up`, not by `pulumi preview` (pulumi-docker's buildOnPreview is
off): a CI preview never needs a Docker daemon.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.base.settings import ImageBuild

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def third_party_folder() -> Path:
    """The upstream source archives no registry serves (../shared/third-party beside the
    clone, or ACM_THIRD_PARTY), as scripts/lib/tools.sh finds them."""
    default = REPOSITORY_ROOT.parent / "shared" / "third-party"
    return Path(os.environ.get("ACM_THIRD_PARTY", default))


@dataclass(frozen=True)
class ImageRecipe:
    repository: str  # the name under the registry
    dockerfile: str  # relative to the repository root
    inputs: tuple[str, ...]  # files and folders (repository-relative) whose content makes the tag
    # The build context; the repository root unless the recipe builds from elsewhere.
    context: Callable[[], Path] = lambda: REPOSITORY_ROOT
    # Build arguments besides BASE; part of the tag.
    build_args: Callable[[], Mapping[str, str]] = field(default=lambda: {})
    # Whether a build step fetches over HTTPS (then it gets EXTRA_CA_CERTS, see ImageBuild).
    fetches_over_https: bool = False


JOB_IMAGE = ImageRecipe("ncc-compliance", "jobs/Dockerfile", ("jobs",), fetches_over_https=True)


def extra_ca_certificates(folder: str | None) -> str:
    """The PEM text of every *.crt in `folder` (sorted by name), or "" without any."""
    if folder is None or not Path(folder).is_dir():
        return ""
    return "".join(path.read_text() for path in sorted(Path(folder).glob("*.crt")))


def content_tag(root: Path = REPOSITORY_ROOT, inputs: tuple[str, ...] = JOB_IMAGE.inputs,
                build_args: Mapping[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    for top in inputs:
        start = root / top
        paths = [start] if start.is_file() else sorted(start.rglob("*"))
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for key, value in sorted((build_args or {}).items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()[:16]


def build_image(name: str, recipe: ImageRecipe, build: ImageBuild,
                opts: pulumi.ResourceOptions | None = None) -> tuple[docker.Image, str]:
    """Build `recipe` from `build.base_image` (or the Dockerfile's upstream default) and push it
    to `build.registry`; returns the resource and the reference pods should run."""
    build_args = dict(recipe.build_args())
    if build.base_image is not None:
        build_args["BASE"] = build.base_image
    if recipe.fetches_over_https:
        build_args["EXTRA_CA_CERTS"] = extra_ca_certificates(build.extra_ca_certificates)
    reference = (f"{build.registry}/{recipe.repository}:"
                 f"{content_tag(inputs=recipe.inputs, build_args=build_args)}")
    image = docker.Image(
        name,
        image_name=reference,
        build=docker.DockerBuildArgs(
            context=str(recipe.context()),
            dockerfile=str(REPOSITORY_ROOT / recipe.dockerfile),
            platform="linux/amd64",
            # Build steps fetch Debian packages and wheels with the host's network: the
            # project's dockerd has no bridge of its own.
            network="host",
            args=build_args,
        ),
        opts=opts,
    )
    return image, reference


def part_image(name: str, recipe: ImageRecipe, pinned: str, build: ImageBuild | None,
               parent: pulumi.Resource) -> pulumi.Input[str]:
    """The image a part's pods run: its pinned image, or, when the part says imageBuild, the
    image built from `recipe` (an output, so that the workload waits for the push)."""
    if build is None:
        return pinned
    image, _ = build_image(name, recipe, build, pulumi.ResourceOptions(parent=parent))
    return image.image_name


def build_job_image(name: str, build: ImageBuild, parent: pulumi.Resource | None = None,
                    opts: pulumi.ResourceOptions | None = None) -> tuple[docker.Image, str]:
    return build_image(name, JOB_IMAGE, build,
                       pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=parent)))
