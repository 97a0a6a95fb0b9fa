"""The OpenSIPS image installs exactly the module packages the rendered configs load.

Which Debian package carries which module is read from OpenSIPS's own packaging
(`packaging/debian/rules` in the 4.0.1 source archive): a module listed in a `FOO_MODULES`
variable ships in `FOO_PKGNAME`; any other module is in the `opensips` package itself.
"""

from __future__ import annotations

import re
import tarfile
from functools import cache
from pathlib import Path

from components.base.images import OPENSIPS_IMAGE, content_tag
from components.opensips.config_files import IMAGE_MODULE_PATH
from stacks.stack_files import STACKS
from tests.conftest import REPO, render_modified, rendering_of

ARCHIVE = REPO.parent / "shared" / "third-party" / "opensips-4.0.1.tar.xz"
DOCKERFILE = REPO / OPENSIPS_IMAGE.dockerfile
BUILT_IN = {"proto_udp", "proto_tcp"}  # linked into the 4.0 core


@cache
def packaging_rules() -> str:
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile("opensips-4.0.1/packaging/debian/rules")
        assert member is not None
        return member.read().decode()


def package_of_module() -> dict[str, str]:
    rules = packaging_rules()
    names = dict(re.findall(r"^(\w+)_PKGNAME\s*=\s*(\S+)", rules, re.M))
    owners = {}
    for variable, modules in re.findall(r"^(\w+)_MODULES\s*=\s*(.+)$", rules, re.M):
        if variable in names:
            for module in modules.split():
                owners[module] = names[variable]
    return owners


def loaded_modules() -> set[str]:
    modules: set[str] = set()
    for stack in STACKS:
        text = rendering_of(stack).rendered_files()["opensips.cfg"]
        modules |= set(re.findall(r'^loadmodule "(\w+)\.so"', text, re.M))
    return modules - BUILT_IN


def needed_packages(modules: set[str]) -> set[str]:
    owners = package_of_module()
    return {"opensips"} | {owners[m] for m in modules if m in owners}


def installed_packages(dockerfile: str) -> set[str]:
    return set(re.findall(r"^\s+(opensips[a-z0-9-]*)=", dockerfile, re.M))


def test_the_image_installs_exactly_the_packages_the_configs_need() -> None:
    needed = needed_packages(loaded_modules())
    assert {"opensips-redis-module", "opensips-tls-openssl-module"} <= needed
    assert installed_packages(DOCKERFILE.read_text()) == needed


def test_a_module_whose_package_is_missing_is_found() -> None:
    without_redis = DOCKERFILE.read_text().replace("opensips-redis-module=", "# dropped ")
    missing = needed_packages(loaded_modules()) - installed_packages(without_redis)
    assert missing == {"opensips-redis-module"}


def test_the_packaging_puts_modules_where_the_config_looks() -> None:
    # Debian packages install modules under lib/<multiarch>/opensips/modules of /usr.
    assert "LIBDIR=lib/$(DEB_HOST_MULTIARCH)" in packaging_rules()
    assert IMAGE_MODULE_PATH == "/usr/lib/x86_64-linux-gnu/opensips/modules/"
    assert 'platform="linux/amd64"' in (REPO / "components" / "base" / "images.py").read_text()


def test_a_stack_with_a_registry_builds_the_opensips_image_and_deploys_its_tag() -> None:
    rendering = render_modified("dev", "opensips.imageBuild",
                                {"registry": "registry.acm.internal/acm"})
    builds = [r for r in rendering.resources if r.type == "docker:index/image:Image"
              and r.name == "opensips-image"]
    assert len(builds) == 1
    assert builds[0].inputs["build"]["dockerfile"].endswith("images/opensips/Dockerfile")
    expected = f"registry.acm.internal/acm/opensips:{content_tag(inputs=OPENSIPS_IMAGE.inputs)}"
    assert builds[0].inputs["imageName"] == expected
    container = rendering.get("Deployment", "opensips")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == expected


def test_without_a_registry_the_stack_deploys_its_pinned_image() -> None:
    rendering = rendering_of("prod")
    assert not [r for r in rendering.resources if r.type == "docker:index/image:Image"]
    container = rendering.get("Deployment", "opensips")["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == rendering.config.opensips.image


def test_the_content_tag_follows_the_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "images" / "opensips").mkdir(parents=True)
    (tmp_path / "images" / "opensips" / "Dockerfile").write_text(DOCKERFILE.read_text())
    before = content_tag(tmp_path, OPENSIPS_IMAGE.inputs)
    (tmp_path / "images" / "opensips" / "Dockerfile").write_text(DOCKERFILE.read_text() + "#\n")
    assert content_tag(tmp_path, OPENSIPS_IMAGE.inputs) != before
