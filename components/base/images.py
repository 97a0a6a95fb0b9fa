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
from typing import Protocol, runtime_checkable

import pulumi
import pulumi_docker as docker

from components.base.settings import ImageBuild

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def third_party_folder() -> Path:
    """The upstream source archives no registry serves (../shared/third-party beside the
    clone, or ACM_THIRD_PARTY), as scripts/lib/tools.sh finds them."""
    default = REPOSITORY_ROOT.parent / "shared" / "third-party"
    return Path(os.environ.get("ACM_THIRD_PARTY", default))


def tools_cache_folder() -> Path:
    """Where the set-up builds pinned programs (ACM_TOOLS_CACHE, else the XDG cache's
    acm-platform), as scripts/lib/tools.sh finds it."""
    if cache := os.environ.get("ACM_TOOLS_CACHE"):
        return Path(cache)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "acm-platform"


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


def image_build_args(recipe: ImageRecipe, build: ImageBuild) -> dict[str, str]:
    build_args = dict(recipe.build_args())
    if build.base_image is not None:
        build_args["BASE"] = build.base_image
    if recipe.fetches_over_https:
        build_args["EXTRA_CA_CERTS"] = extra_ca_certificates(build.extra_ca_certificates)
    return build_args


def image_reference(recipe: ImageRecipe, build: ImageBuild) -> str:
    """Where the image built from `recipe` goes: its repository, tagged by its content."""
    tag = content_tag(inputs=recipe.inputs, build_args=image_build_args(recipe, build))
    return f"{build.registry}/{recipe.repository}:{tag}"


@runtime_checkable
class ImageSource(Protocol):
    """Where a part gets the image its pods run."""

    def image(self, recipe: ImageRecipe, pinned: str,
              build: ImageBuild | None) -> pulumi.Input[str]: ...


class PinnedImages:
    """A source that builds nothing: every part runs its pinned image (the SIP lab renders a
    part's values outside Pulumi with it)."""

    def image(self, recipe: ImageRecipe, pinned: str,
              build: ImageBuild | None) -> pulumi.Input[str]:
        if build is not None:
            raise ValueError(f"{recipe.repository}: imageBuild is set, and this source builds "
                             "no images; give the part the stack's StackImages")
        return pinned


class StackImages(pulumi.ComponentResource):
    """The images one stack builds, each by exactly one Image resource.

    Parts that run the same image (the engine stand-in and the media-gateway stand-in both run
    the SIP stand-in) get the same resource: two Image resources of one repository push it at
    the same time, and the registry (distribution 2.8, filesystem storage) answers such a race
    with 500 ("invalid checksum digest format" on a blob HEAD) because each push rewrites the
    repository's layer link files in place. Pushes of different repositories that share base
    layers are safe (each repository has its own link files, blob data is committed by rename):
    tests/cluster/test_image_pushes.py pushes every local image at once into empty registries.
    One repository asked for with two contents in one stack is refused, since the two would
    again be pushed at once.

    The images are this component's children, not the parts', so that a part that waits for
    another part's readiness (stacks/platform.py) does not hold its image build back too.
    """

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:Images", name, None, opts)
        self._by_repository: dict[str, tuple[str, docker.Image]] = {}
        self.register_outputs({})

    def image(self, recipe: ImageRecipe, pinned: str,
              build: ImageBuild | None) -> pulumi.Input[str]:
        """The image a part's pods run: its pinned image, or, when the part says imageBuild,
        the image built from `recipe` (an output, so that the workload waits for the push)."""
        if build is None:
            return pinned
        return self._built(recipe, build).image_name

    def _built(self, recipe: ImageRecipe, build: ImageBuild) -> docker.Image:
        reference = image_reference(recipe, build)
        known = self._by_repository.get(recipe.repository)
        if known is not None:
            if known[0] != reference:
                raise ValueError(
                    f"image repository {recipe.repository!r} is asked for with two contents "
                    f"({known[0]} and {reference}): give the parts one imageBuild (registry and "
                    "baseImage), since two pushes of one repository at once fail")
            return known[1]
        image = docker.Image(
            f"{recipe.repository}-image",
            image_name=reference,
            build=docker.DockerBuildArgs(
                context=str(recipe.context()),
                dockerfile=str(REPOSITORY_ROOT / recipe.dockerfile),
                platform="linux/amd64",
                # Build steps fetch Debian packages and wheels with the host's network: the
                # project's dockerd has no bridge of its own.
                network="host",
                args=image_build_args(recipe, build),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._by_repository[recipe.repository] = (reference, image)
        return image
