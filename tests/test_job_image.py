"""The job image: what jobs/Dockerfile installs matches the project's pins and covers every
import of the jobs package, and stacks with a registry build it with a pinned tag."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from components.base.images import content_tag
from tests.conftest import render_modified

ROOT = Path(__file__).resolve().parents[1]
# Distribution name -> the module it is imported as.
IMPORT_NAMES = {"pydantic-settings": "pydantic_settings", "psycopg[binary]": "psycopg",
                "prometheus-client": "prometheus_client"}


def image_requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "jobs" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def test_image_pins_equal_the_project_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(re.match(r"^([^=]+)==(.+)$", item).groups() for item in project)  # type: ignore[union-attr]
    for name, version in image_requirements().items():
        assert pinned.get(name) == version, name


def test_image_requirements_cover_every_import_of_jobs() -> None:
    provided = {"jobs"} | {IMPORT_NAMES.get(name, name) for name in image_requirements()}
    for path in (ROOT / "jobs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                       and node.level == 0 else [])
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top in provided or top == "__future__", \
                    f"{path.name} imports {module}, which the job image does not install"


def test_stack_with_a_registry_builds_the_image_and_deploys_its_tag() -> None:
    rendering = render_modified("dev", "compliance.imageBuild",
                                {"registry": "registry.acm.internal/acm"})
    builds = [r for r in rendering.resources if r.type == "docker:index/image:Image"]
    assert len(builds) == 1
    assert builds[0].inputs["build"]["dockerfile"].endswith("jobs/Dockerfile")
    arguments = builds[0].inputs["build"]["args"]
    assert set(arguments) == {"EXTRA_CA_CERTS"}  # no base: the Dockerfile's upstream default
    expected = f"registry.acm.internal/acm/ncc-compliance:{content_tag(build_args=arguments)}"
    for job in rendering.objects("CronJob"):
        container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == expected


def test_content_tag_changes_with_the_job_code(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "cli.py").write_text("print(1)\n")
    before = content_tag(tmp_path)
    (tmp_path / "jobs" / "cli.py").write_text("print(2)\n")
    assert content_tag(tmp_path) != before
