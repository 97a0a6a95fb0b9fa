"""`pulumi preview` of every stack against the local control plane, with the policy pack as CI
review runs it (`--policy-pack policies --policy-pack-config policies/enforcement/<stack>.json`):
each stack passes; a change that breaks a mandatory rule fails naming the rule; a stack whose
cluster is not there fails instead of previewing green."""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto

from stacks.render import Rendering
from stacks.stack_files import STACKS
from tests.conftest import rendering_of
from tests.engine import (
    POLICY_PACK,
    Engine,
    changes,
    policy_config,
    stack_document,
    unreachable_kubeconfig,
    write_stack_document,
)

pytestmark = pytest.mark.slow


def preview(engine: Engine, stack: str, config_file: Path | None = None) -> auto.PreviewResult:
    return engine.stack(stack).preview(
        policy_packs=[str(POLICY_PACK)], policy_pack_configs=[policy_config(stack)],
        config_file=str(config_file) if config_file else None, on_output=lambda _: None)


def kubernetes_objects(rendering: Rendering) -> int:
    return sum(1 for r in rendering.resources if r.type.startswith("kubernetes:")
               and r.type != "pulumi:providers:kubernetes")


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_previews_with_its_policy_pack(engine: Engine, stack: str) -> None:
    result = preview(engine, stack)
    # A fresh state: the whole stack would be created, its objects as the offline render has
    # them (the render and the engine run one program), the components and the provider too.
    created = changes(result.change_summary, "create")
    assert created >= kubernetes_objects(rendering_of(stack)), result.change_summary
    assert set(result.change_summary) == {"create"}, result.change_summary
    assert "mandatory" not in result.stdout.lower()


def test_a_change_that_breaks_a_mandatory_rule_fails_the_preview(engine: Engine,
                                                                 tmp_path: Path) -> None:
    # Valid stack config (only prod has the replica floor in its validation), but staging's
    # enforcement makes `hpa-min-replicas` (minimum 3) mandatory.
    document = stack_document("staging")
    opensips = document["config"]["acm-platform:opensips"]
    opensips["autoscaling"] = {**opensips["autoscaling"], "minReplicas": 2}
    opensips["pdb"] = {"minAvailable": 1}
    changed = write_stack_document(document, tmp_path / "Pulumi.staging.yaml")
    with pytest.raises(auto.CommandError) as failed:
        preview(engine, "staging", changed)
    message = str(failed.value)
    assert "hpa-min-replicas" in message, message
    assert "mandatory" in message, message
    assert "minReplicas 2 is below 3" in message, message


def test_a_context_the_kubeconfig_lacks_fails_the_preview(engine: Engine,
                                                          tmp_path: Path) -> None:
    # The trap the real engine found: `acm-local` where the control plane writes
    # `kwok-acm-local`. The provider would preview from inputs and look green.
    document = stack_document("local")
    document["config"]["acm-platform:kubernetes"]["context"] = "acm-local"
    changed = write_stack_document(document, tmp_path / "Pulumi.local.yaml")
    with pytest.raises(auto.CommandError) as failed:
        preview(engine, "local", changed)
    message = str(failed.value)
    assert "acm-platform:kubernetes.context" in message, message
    assert "'acm-local'" in message, message


def test_an_unreachable_cluster_fails_the_preview_unless_the_stack_says_so(
        engine: Engine, tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    offline = Engine(tmp_path / "state", kubeconfig)
    with pytest.raises(auto.CommandError) as failed:
        preview(offline, "prod")
    assert "did not answer" in str(failed.value), str(failed.value)

    document = stack_document("prod")
    document["config"]["acm-platform:kubernetes"]["previewWithoutCluster"] = True
    said_so = write_stack_document(document, tmp_path / "Pulumi.prod.yaml")
    result = preview(offline, "prod", said_so)
    assert "previewWithoutCluster is true" in result.stdout, result.stdout
