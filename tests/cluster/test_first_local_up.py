"""The main command as a new user meets it: exactly `scripts/local-up`, from a registry that
holds only the base and pause images (`scripts/images empty`), so every image of the stack is
built and pushed in this up, as on a fresh machine. Then the README's way down, and an up
whose image cannot be built: it ends soon after the failure, names the image, and shows no
traceback.

The only thing that differs from a user's shell is the state backend: a folder of this test's
own (PULUMI_BACKEND_URL), so that the test never touches a developer's stacks. These tests run
first in the session (tests/conftest.py orders them), so that in CI this is the first
deployment of the run. They share one stack in file order.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.kube import Cluster, readiness
from tests.conftest import REPO, rendering_of
from tests.engine import stack_document, write_stack_document

pytestmark = pytest.mark.slow

LOCAL_UP = REPO / "scripts" / "local-up"
PULUMI = REPO / "scripts" / "pulumi"
MISSING_BASE = "127.0.0.1:5000/acm/no-such-base:missing"
# Long enough for a cold first up on 2 cores (every image built from nothing).
FIRST_UP_TIMEOUT = 3600


@dataclass(frozen=True)
class Run:
    returncode: int
    seconds: float
    lines: list[tuple[float, str]]  # seconds since the start, and the line

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_timed(command: list[str], env: dict[str, str], timeout: float) -> Run:
    """Run `command` with its output merged, each line stamped with when it came."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
    returncode = process.wait()
    timer.cancel()
    return Run(returncode, time.monotonic() - started, lines)


def user_environment(backend: Path) -> dict[str, str]:
    return {**os.environ, "PULUMI_BACKEND_URL": f"file://{backend}"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-up-state")


@pytest.fixture(scope="module")
def first_local_up(control_plane: Path, backend: Path) -> Iterator[Run]:
    subprocess.run([REPO / "scripts" / "images", "empty"], check=True)
    run = run_timed([str(LOCAL_UP)], user_environment(backend), FIRST_UP_TIMEOUT)
    print(f"\nfirst local-up from an empty registry: {run.seconds:.0f} s, "
          f"exit {run.returncode}; its last lines:\n"
          + "\n".join(line for _, line in run.lines[-12:]))
    yield run
    # Whatever a failing test left behind goes (the destroy test checks destroy itself).
    down(backend)


def down(backend: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PULUMI), "destroy", "--stack", "local", "--yes",
                           "--non-interactive"], cwd=REPO, env=user_environment(backend),
                          capture_output=True, text=True, timeout=1200)


def test_the_first_local_up_from_an_empty_registry_succeeds(
        first_local_up: Run, control_plane: Path) -> None:
    assert first_local_up.returncode == 0, first_local_up.output[-4000:]
    assert "Traceback" not in first_local_up.output
    assert re.search(r"\+ \d+ created", first_local_up.output), first_local_up.output[-2000:]
    # The provider waited for every rollout; a pod may still be between probes, as in
    # tests/cluster/test_local_stack.py.
    rendering = rendering_of("local")
    cluster = Cluster(control_plane)
    deadline = time.monotonic() + 120
    while True:
        waiting = [s for s in readiness(cluster, rendering) if not s.ready]
        if not waiting:
            break
        assert time.monotonic() < deadline, waiting
        time.sleep(2)


def test_the_readme_way_down_leaves_no_namespace(first_local_up: Run, backend: Path,
                                                 control_plane: Path) -> None:
    done = down(backend)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    namespace_gone(Cluster(control_plane))


def namespace_gone(cluster: Cluster) -> None:
    deadline = time.monotonic() + 180
    while cluster.namespace_exists("acm-local"):
        assert time.monotonic() < deadline, "namespace acm-local outlived the destroy"
        time.sleep(2)


def test_an_image_that_cannot_be_built_fails_the_up_soon_naming_it(
        first_local_up: Run, control_plane: Path, tmp_path: Path) -> None:
    # The stand-ins run the SIP stand-in image (the webhook receiver's too); from a base that
    # does not exist it cannot be built. Everything else builds (from the cache) and the stores
    # come up; the engine, OpenSIPS (which needs an engine) and HAProxy (which needs OpenSIPS)
    # must not be waited on.
    document = stack_document("local")
    broken = {"registry": "127.0.0.1:5000/acm", "baseImage": MISSING_BASE}
    for part in ("acmEngine", "mediaGatewayStandIn", "alertReceiverStandIn"):
        document["config"][f"acm-platform:{part}"]["imageBuild"] = dict(broken)
    config_file = write_stack_document(document, tmp_path / "Pulumi.local.yaml")
    backend = tmp_path / "state"
    backend.mkdir()
    namespace_gone(Cluster(control_plane))
    try:
        run = run_timed([str(LOCAL_UP), "--config-file", str(config_file)],
                        user_environment(backend), 1800)
    finally:
        down(backend)
    output = run.output
    assert run.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-6000:]
    failed_at = next((at for at, line in run.lines
                      if "sip-stand-in-image" in line and "error" in line.lower()), None)
    assert failed_at is not None, output[-4000:]
    print(f"\nthe image failed {failed_at:.0f} s into the up; the up ended "
          f"{run.seconds - failed_at:.0f} s later")
    assert run.seconds - failed_at < 60, output[-4000:]
    # The cause is the first resource the diagnostics name (the stack's own entry only says
    # "update failed"), with the base it could not find; nothing that needs the engine was
    # created, so nothing waited for it.
    assert failed_resources(output) == ["sip-stand-in-image"], output[-4000:]
    assert MISSING_BASE in output[output.rindex("Diagnostics:"):]
    update = output[output.rindex("Updating ("):]  # not the preview's plan before it
    assert not re.search(r"(acm-engine|opensips|haproxy)-deployment (creat|\*\*creat)", update)


def failed_resources(output: str) -> list[str]:
    """The resources the diagnostics of an up name, in order, but the stack itself."""
    # The last section: `up --yes` prints the preview's diagnostics first.
    diagnostics = output[output.rindex("Diagnostics:"):].split("\nResources:")[0]
    named = re.findall(r"^\s+(\S+:\S+:\S+) \((\S+)\):", diagnostics, re.MULTILINE)
    return [name for kind, name in named if kind != "pulumi:pulumi:Stack"]


def test_an_up_the_cluster_refuses_at_once_ends_without_a_traceback(
        first_local_up: Run, control_plane: Path, tmp_path: Path) -> None:
    # A namespace of the same name left by someone else: the first resource fails while the
    # program still has most of the stack to register, and the engine ends the program.
    cluster = Cluster(control_plane)
    namespace_gone(cluster)
    core = cluster.core()
    core.create_namespace({"metadata": {"name": "acm-local"}})
    backend = tmp_path / "state"
    backend.mkdir()
    try:
        run = run_timed([str(LOCAL_UP)], user_environment(backend), 900)
    finally:
        down(backend)
        core.delete_namespace("acm-local")
        namespace_gone(cluster)
    assert run.returncode != 0, run.output[-3000:]
    assert "Traceback" not in run.output and "KeyboardInterrupt" not in run.output, \
        run.output[-6000:]
    assert failed_resources(run.output) == ["foundation-namespace"], run.output[-4000:]
    assert 'namespaces "acm-local" already exists' in run.output
