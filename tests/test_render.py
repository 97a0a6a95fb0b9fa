"""`acmctl render`: every stack renders, to files a reviewer can diff, the same way twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from stacks.render import APPLY_ORDER, Rendering, render_stack
from stacks.stack_files import STACKS


def test_every_stack_renders_the_whole_topology(any_stack: Rendering) -> None:
    kinds = {m["kind"] for m in any_stack.manifests}
    assert {"Namespace", "NetworkPolicy", "Deployment", "StatefulSet", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    names = {m["metadata"]["name"] for m in any_stack.objects("Deployment")}
    assert {"opensips", "haproxy", "acm-engine"} <= names
    stateful = {m["metadata"]["name"] for m in any_stack.objects("StatefulSet")}
    # local: PostgreSQL answers YSQL in the tservers' place (no masters), no ClickHouse.
    # local also runs the object store in the operator's store's place.
    full = {"dragonfly", "yb-master", "yb-tserver", "clickhouse", "prometheus", "alertmanager"}
    stand_ins = any_stack.config.yugabyte.stand_in is not None
    assert stateful == (full - {"yb-master", "clickhouse"}) | {"object-store"} if stand_ins \
        else full <= stateful
    assert {"opensips.cfg", "haproxy.cfg", "prometheus.yml", "alert-rules.yml",
            "alertmanager.yml"} <= set(any_stack.rendered_files())


def test_manifests_come_in_apply_order(prod: Rendering) -> None:
    positions = [APPLY_ORDER.index(m["kind"]) for m in prod.manifests]
    assert positions == sorted(positions)
    assert prod.manifests[0]["kind"] == "Namespace"


def test_render_is_deterministic() -> None:
    # Content-named ConfigMaps and sorted output: the same input renders byte for byte.
    first = render_stack("staging")
    second = render_stack("staging")
    assert yaml.safe_dump_all(first.manifests) == yaml.safe_dump_all(second.manifests)


def test_acmctl_render_writes_one_object_per_document(tmp_path: Path) -> None:
    out = tmp_path / "prod"
    result = subprocess.run(
        [sys.executable, "-m", "stacks.cli", "render", "prod", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    files = sorted((out / "manifests").iterdir())
    assert len(files) >= 60
    kinds = []
    for file in files:
        documents = list(yaml.safe_load_all(file.read_text()))
        assert len(documents) == 1, file.name
        kinds.append(documents[0]["kind"])
    assert [APPLY_ORDER.index(kind) for kind in kinds] == sorted(
        APPLY_ORDER.index(kind) for kind in kinds)
    assert (out / "config" / "opensips.cfg").read_text().startswith("#")
    assert "backend opensips_sip_tcp" in (out / "config" / "haproxy.cfg").read_text()


def test_acmctl_render_refuses_bad_config_and_writes_nothing(tmp_path: Path) -> None:
    stack_file = Path("Pulumi.prod.yaml").read_text().replace(
        "minAvailable: 2", "minAvailable: 20", 1)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.prod.yaml").write_text(stack_file)
    from stacks.config import StackConfigError

    try:
        render_stack("prod", root=project)
    except StackConfigError as error:
        assert "acm-platform:haproxy:" in str(error)
        assert "pdb.minAvailable 20 must be below replicas 3" in str(error)
    else:
        raise AssertionError("a PDB above the replica count rendered")


def test_all_stack_files_exist() -> None:
    for stack in STACKS:
        assert Path(f"Pulumi.{stack}.yaml").exists()


def test_the_shedding_pipe_admits_a_tenth_of_the_ceiling_every_tenth_of_a_second(
        prod: Rendering) -> None:
    from components.opensips.settings import LoadShedding

    ceiling = prod.config.opensips.load_shedding.calls_per_second
    config = prod.rendered_files()["opensips.cfg"]
    assert "$var(shed_slot) = $Tsm / 100000;" in config
    assert f'rl_check("shed:$Ts:$var(shed_slot)", {ceiling // 10}, "TAILDROP")' in config
    assert "maxbuffer = 4194304" in config
    # Below 100 calls a second a tenth would round too coarsely: one 1-second window.
    small = LoadShedding(calls_per_second=20)
    assert (small.slots_per_second, small.calls_per_slot) == (1, 20)
    odd = LoadShedding(calls_per_second=675)
    assert (odd.slots_per_second, odd.calls_per_slot) == (10, 67)
