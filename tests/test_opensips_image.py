"""The OpenSIPS image is built from the pinned source archive with exactly the modules the
configs load: the same list and pins as the binary the tests run (scripts/opensips), so the
two builds never drift apart. What the built image really holds is checked on the deployed
stack (tests/cluster/test_real_node.py)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.base.images import content_tag, third_party_folder
from components.opensips.config_files import IMAGE_MODULE_PATH
from components.opensips.modules import (
    BUILT_IN,
    OPENSIPS_IMAGE,
    PATCHES,
    PatchSeriesError,
    opensips_build_args,
    patch_series,
    source_pins,
    template_modules,
)
from stacks.stack_files import STACKS
from tests.conftest import REPO, render_modified, rendering_of

DOCKERFILE = REPO / OPENSIPS_IMAGE.dockerfile


def loaded_modules() -> set[str]:
    modules: set[str] = set()
    for stack in STACKS:
        text = rendering_of(stack).rendered_files()["opensips.cfg"]
        modules |= set(re.findall(r'^loadmodule "(\w+)\.so"', text, re.M))
    return modules - BUILT_IN


def test_the_build_list_covers_every_module_a_rendered_config_loads() -> None:
    assert loaded_modules() <= set(template_modules())
    assert {"cachedb_redis", "tls_openssl", "httpd", "prometheus"} <= set(template_modules())


def test_a_module_the_template_loads_joins_the_list(tmp_path: Path) -> None:
    template = tmp_path / "opensips.cfg.j2"
    template.write_text('loadmodule "tm.so"\nloadmodule "proto_udp.so"\nloadmodule "acc.so"\n')
    assert template_modules(template) == ["acc", "tm"]


def test_the_archive_beside_the_clone_is_the_pinned_one() -> None:
    pins = source_pins()
    archive = third_party_folder() / f"opensips-{pins['OPENSIPS_VERSION']}.tar.xz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == pins["OPENSIPS_SHA256"]


def test_scripts_opensips_builds_the_same_list_from_the_same_pins() -> None:
    # The tests' build asks the same module for its list and sources the same pins file.
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m",
                             "components.opensips.modules"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == template_modules()
    script = (REPO / "scripts" / "opensips").read_text()
    assert "source images/opensips/pins" in script
    assert "-m components.opensips.modules" in script


def test_modules_land_where_the_config_looks() -> None:
    # Debian's packaging installs modules under lib/<multiarch>/opensips/modules of /usr; the
    # image's build uses the same LIBDIR, and the rendered mpath points there.
    assert "prefix=/usr LIBDIR=lib/x86_64-linux-gnu" in DOCKERFILE.read_text()
    assert IMAGE_MODULE_PATH == "/usr/lib/x86_64-linux-gnu/opensips/modules/"


def test_a_stack_with_a_registry_builds_the_opensips_image_and_deploys_its_tag() -> None:
    rendering = render_modified("dev", "opensips.imageBuild",
                                {"registry": "registry.acm.internal/acm"})
    builds = {r.name: r for r in rendering.resources if r.type == "docker:index/image:Image"}
    assert set(builds) == {"opensips-image", "python-image"}
    build = builds["opensips-image"].inputs["build"]
    assert build["dockerfile"].endswith("images/opensips/Dockerfile")
    assert Path(build["context"]) == third_party_folder()
    assert build["args"] == dict(opensips_build_args())
    assert build["network"] == "host"
    expected = ("registry.acm.internal/acm/opensips:"
                f"{content_tag(inputs=OPENSIPS_IMAGE.inputs, build_args=build['args'])}")
    assert builds["opensips-image"].inputs["imageName"] == expected
    pod = rendering.get("Deployment", "opensips")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == expected
    assert pod["initContainers"][0]["image"].startswith("registry.acm.internal/acm/python:")


def test_a_base_image_is_passed_to_every_build() -> None:
    rendering = render_modified("dev", "opensips.imageBuild",
                                {"registry": "registry.acm.internal/acm",
                                 "baseImage": "registry.acm.internal/acm/debian:bookworm"})
    builds = [r for r in rendering.resources if r.type == "docker:index/image:Image"]
    assert builds
    assert all(b.inputs["build"]["args"]["BASE"] == "registry.acm.internal/acm/debian:bookworm"
               for b in builds)


def test_without_a_registry_the_stack_deploys_its_pinned_image() -> None:
    rendering = rendering_of("prod")
    assert not [r for r in rendering.resources if r.type == "docker:index/image:Image"]
    container = rendering.get("Deployment", "opensips")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == rendering.config.opensips.image


def test_the_content_tag_follows_the_dockerfile_and_the_module_list(tmp_path: Path) -> None:
    (tmp_path / "images" / "opensips").mkdir(parents=True)
    (tmp_path / "images" / "opensips" / "Dockerfile").write_text(DOCKERFILE.read_text())
    arguments = dict(opensips_build_args())
    before = content_tag(tmp_path, OPENSIPS_IMAGE.inputs, arguments)
    fewer = {**arguments,
             "OPENSIPS_MODULES": " ".join(arguments["OPENSIPS_MODULES"].split()[1:])}
    assert content_tag(tmp_path, OPENSIPS_IMAGE.inputs, fewer) != before
    (tmp_path / "images" / "opensips" / "Dockerfile").write_text(DOCKERFILE.read_text() + "#\n")
    assert content_tag(tmp_path, OPENSIPS_IMAGE.inputs, arguments) != before


def test_the_patch_series_is_checked_against_its_sha256_lines(tmp_path: Path) -> None:
    patches = patch_series()
    assert [path.name for path in patches] == [
        "0001-proxy_protocol-parse-the-PROXY-header-per-connection.patch"]
    for path in patches:
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(PATCHES / "series", tmp_path / "series")
    assert [path.name for path in patch_series(tmp_path)] == [path.name for path in patches]
    # A patch changed without its series line fails the build, naming both.
    edited = tmp_path / patches[0].name
    edited.write_text(edited.read_text() + "\n")
    with pytest.raises(PatchSeriesError, match=f"{patches[0].name} has sha256 .* but"):
        patch_series(tmp_path)
    shutil.copy(patches[0], edited)
    # So does a patch file the series does not list.
    (tmp_path / "0002-unlisted.patch").write_text("")
    with pytest.raises(PatchSeriesError, match=r"0002-unlisted\.patch .* not in its series"):
        patch_series(tmp_path)


def test_both_builds_apply_the_same_series() -> None:
    # The image build carries the series' patches in order, with their sha256; the tests'
    # build asks the same module for the same checked files.
    args = opensips_build_args()
    expected = "".join(path.read_bytes().decode() for path in patch_series())
    assert args["OPENSIPS_PATCHES"] == expected
    assert args["OPENSIPS_PATCHES_SHA256"] == hashlib.sha256(expected.encode()).hexdigest()
    dockerfile = (REPO / "images" / "opensips" / "Dockerfile").read_text()
    assert 'sha256sum -c' in dockerfile and "patch -p1 --batch --forward <../patches" in dockerfile
    listed = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m",
                             "components.opensips.modules", "patches"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == [str(path) for path in patch_series()]
    assert "-m components.opensips.modules patches" in (REPO / "scripts" / "opensips").read_text()
