"""The images a stack builds, under Pulumi's mocks: one Image resource per repository, shared by
every part that runs it, and none at all in a stack that builds nothing."""

from __future__ import annotations

from collections import Counter

import pytest

from components.base.images import (
    PinnedImages,
    image_reference,
)
from components.base.settings import ImageBuild
from components.stand_ins import SIP_STAND_IN_IMAGE
from stacks.render import Rendering
from tests.conftest import rendering_of

IMAGE = "docker:index/image:Image"


def repository_of(reference: str) -> str:
    return reference.rsplit(":", 1)[0]


def test_each_repository_is_pushed_by_exactly_one_image_resource(local: Rendering) -> None:
    built = [r.inputs["imageName"] for r in local.resources if r.type == IMAGE]
    assert built, "the local stack builds its images"
    repositories = Counter(repository_of(reference) for reference in built)
    assert all(count == 1 for count in repositories.values()), repositories


def test_both_stand_ins_run_the_one_sip_stand_in_image(local: Rendering) -> None:
    engine = local.get("Deployment", "acm-engine")["spec"]["template"]["spec"]["containers"][0]
    gateway = local.get("Deployment", "media-gateway-stand-in")["spec"]["template"]["spec"]
    assert engine["image"] == gateway["containers"][0]["image"]
    assert repository_of(engine["image"]).endswith("/sip-stand-in")
    sip_stand_in = [r for r in local.resources
                    if r.type == IMAGE and r.inputs["imageName"] == engine["image"]]
    assert len(sip_stand_in) == 1


def test_every_pod_of_the_local_stack_runs_an_image_it_builds(local: Rendering) -> None:
    built = {r.inputs["imageName"] for r in local.resources if r.type == IMAGE}
    for kind in ("Deployment", "StatefulSet"):
        for workload in local.objects(kind):
            pod = workload["spec"]["template"]["spec"]
            for container in pod["containers"] + pod.get("initContainers", []):
                assert container["image"] in built, (workload["metadata"]["name"], container)


def test_a_stack_without_builds_has_no_image_resource() -> None:
    assert not [r for r in rendering_of("prod").resources if r.type == IMAGE]


def test_pinned_images_refuse_a_build_by_name() -> None:
    build = ImageBuild(registry="127.0.0.1:5000/acm")
    with pytest.raises(ValueError, match="sip-stand-in: imageBuild is set"):
        PinnedImages().image(SIP_STAND_IN_IMAGE, "pinned:1", build)
    assert PinnedImages().image(SIP_STAND_IN_IMAGE, "pinned:1", None) == "pinned:1"
    assert image_reference(SIP_STAND_IN_IMAGE, build).startswith(
        "127.0.0.1:5000/acm/sip-stand-in:")
