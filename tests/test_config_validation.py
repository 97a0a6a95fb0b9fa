"""Invalid stack config fails before any resource exists, naming the key path and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stacks.config import StackConfigError, load_stack_config
from stacks.render import RecordingMocks
from tests.conftest import delete_path, set_path, stack_values

SET = "set"
DELETE = "delete"

# (stack, operation, key path, value, expected key path in the message, expected reason)
BAD_INPUTS: list[tuple[str, str, str, Any, str, str]] = [
    ("prod", SET, "opensips.pdb.minAvailable", 3, "acm-platform:opensips:",
     "pdb.minAvailable 3 must be below autoscaling.minReplicas 3"),
    ("prod", SET, "opensips.autoscaling.minReplicas", 11, "acm-platform:opensips.autoscaling:",
     "minReplicas 11 is greater than maxReplicas 10"),
    ("prod", SET, "haproxy.image", "docker.io/library/haproxy:latest", "haproxy.image",
     "uses ':latest'"),
    ("prod", SET, "opensips.image", "docker.io/opensips/opensips", "opensips.image",
     "has no tag"),
    ("prod", SET, "acmEngine.resources.limits.memory", "512Mi", "acmEngine.resources",
     "limits.memory 512Mi is below requests.memory 1Gi"),
    ("prod", SET, "opensips.replicas", 3, "opensips.replicas", "unknown key"),
    ("prod", SET, "haproxy.replicas", "3", "haproxy.replicas", "valid integer"),
    ("prod", SET, "opensips.ports.proxyTcp", 70000, "opensips.ports.proxyTcp",
     "less than or equal to 65535"),
    ("prod", SET, "opensips.ports.proxyTcp", 5060, "opensips.ports",
     "proxyTcp and sipTcp both use TCP port 5060"),
    ("prod", DELETE, "databasePassword", None, "acm-platform:databasePassword",
     "required secret is missing"),
    ("prod", SET, "grafanaAdminPassword", "hunter2", "acm-platform:grafanaAdminPassword",
     "stored in plain text"),
    ("prod", SET, "haproxy.pdb.minAvailable", 3, "acm-platform:haproxy:",
     "pdb.minAvailable 3 must be below replicas 3"),
    ("prod", SET, "opensips.tcpIoThreads", 3, "acm-platform:opensips:",
     "tcpIoThreads 3 is more than the 2 core(s) of resources.limits.cpu 2"),
    ("prod", SET, "opensips.tcpIoThreads", 0, "opensips.tcpIoThreads",
     "greater than or equal to 1"),
    ("prod", SET, "yugabyte.replicationFactor", 1, "acm-platform:(stack)",
     "yugabyte.replicationFactor is below 3"),
    ("prod", SET, "yugabyte.replicationFactor", 2, "acm-platform:yugabyte:", "must be odd"),
    ("staging", SET, "yugabyte.tservers.replicas", 1, "acm-platform:yugabyte:",
     "tservers.replicas 1 is below replicationFactor 3"),
    ("prod", SET, "compliance.reports.daily.activeDeadlineSeconds", 1800,
     "acm-platform:compliance.reports:", "can end after the regulator's 06:00 deadline"),
    ("prod", SET, "compliance.reports.monthly.schedule", "0 17 5 * *",
     "acm-platform:compliance.reports:", "can end after the regulator's 18:00 deadline"),
    ("prod", SET, "compliance.reports.daily.schedule", "*/30 5 * * *",
     "acm-platform:compliance.reports:", "must run once a day at a fixed time"),
    ("prod", SET, "compliance.reports.incidents.activeDeadlineSeconds", 3600,
     "acm-platform:compliance.reports:", "under the 1-hour incident deadline"),
    ("prod", SET, "compliance.sftpDirectory", "incoming", "compliance.sftpDirectory",
     "is not an absolute path: it must start with '/'"),
    ("prod", SET, "compliance.reports.daily.schedule", "30 25 * * *",
     "compliance.reports.daily.schedule", "hour field"),
    ("prod", SET, "compliance.reports.daily.schedule", "30 5 * *",
     "compliance.reports.daily.schedule", "must have 5 fields"),
    ("prod", SET, "network.sipPeerCidrs", ["10.0.0.0/33"], "network.sipPeerCidrs[0]",
     "is not a network in CIDR form"),
    ("prod", SET, "network.sipPeerCidrs", ["999.51.100.0/24"], "network.sipPeerCidrs[0]",
     "is not a network in CIDR form"),
    ("prod", SET, "network.sipPeerCidrs", ["198.51.100.7/24"], "network.sipPeerCidrs[0]",
     "has host bits set"),
    ("prod", SET, "opensips.mediaGatewayCidrs", ["192.0.2.0"], "opensips.mediaGatewayCidrs[0]",
     "198.51.100.0/24"),
    ("prod", SET, "compliance.sftpHost", "", "compliance.sftpHost",
     "is not a host name or IP address"),
    ("prod", SET, "compliance.sftpHost", "sftp.ncc.gov.ng ", "compliance.sftpHost",
     "no scheme, port, path or spaces"),
    ("prod", SET, "compliance.sftpHost", "https://sftp.ncc.gov.ng", "compliance.sftpHost",
     "is not a host name or IP address"),
    ("prod", SET, "opensips.mediaGateways.0.host", "mgw1..example.ng",
     "opensips.mediaGateways[0].host", "is not a host name or IP address"),
    ("prod", SET, "opensips.image", "docker.io/opensips/opensips:3.4.9", "acm-platform:opensips:",
     "is OpenSIPS 3.4: the config accepts HAProxy's PROXY protocol"),
    ("prod", SET, "opensips.image",
     "registry.acm.internal/acm/opensips:4.0.1-acm1@sha256:" + "g" * 64, "opensips.image",
     "is not an image reference"),
    ("prod", SET, "compliance.licenseNumber", "ncc/acm-01", "compliance.licenseNumber",
     "3 to 32 capital letters, digits or hyphens"),
    ("prod", SET, "compliance.reports.monthly.schedule", "0 16 31 2 *",
     "compliance.reports.monthly.schedule", "never runs"),
    ("prod", SET, "compliance.reports.weekly.schedule", "0 11 * * FUNDAY",
     "compliance.reports.weekly.schedule", "day of week field 'FUNDAY' is not valid"),
    ("prod", SET, "haproxy.ports.management", 8404, "acm-platform:haproxy.ports:",
     "stats and management both use TCP port 8404"),
    ("prod", SET, "acmEngine.httpPort", 5060, "acm-platform:acmEngine:",
     "sipPort and httpPort both use TCP port 5060"),
    ("prod", SET, "clickhouse.nativePort", 8123, "acm-platform:clickhouse:",
     "nativePort and httpPort both use TCP port 8123"),
    ("prod", SET, "opensips.mediaGateways.1.host", "mgw1.interconnect.example.ng",
     "acm-platform:opensips:", "lists mgw1.interconnect.example.ng:5060 more than once"),
    ("prod", SET, "opensips.autoscaling.targetCpuPercent", 0,
     "opensips.autoscaling.targetCpuPercent", "greater than or equal to 1"),
    ("prod", SET, "opensips.autoscaling.scaleUp.policies.0.type", "Nodes",
     "opensips.autoscaling.scaleUp.policies[0].type", "'Pods' or 'Percent'"),
    ("prod", SET, "dragonfly.storage.size", "20", "dragonfly.storage.size",
     "less than 1Gi"),
    ("prod", SET, "opensips.resources.requests.cpu", "one", "opensips.resources.requests.cpu",
     "not a Kubernetes quantity"),
    ("prod", SET, "compliance.nccEnvironment", "sandbox", "acm-platform:(stack)",
     "nccEnvironment must be 'production' in prod"),
    ("prod", SET, "compliance.atrsBaseUrl", "http://atrs.example", "compliance.atrsBaseUrl",
     "is not an https:// address"),
    ("prod", SET, "compliance.firstDataDate", 20260105, "compliance.firstDataDate",
     "is not a day in the form 'YYYY-MM-DD'"),
    ("prod", SET, "compliance.firstDataDate", "2026-02-30", "compliance.firstDataDate",
     "valid date"),
    ("prod", DELETE, "compliance.firstDataDate", None, "compliance.firstDataDate",
     "required key is missing"),
    ("prod", DELETE, "opensips.mediaGateways", None, "opensips.mediaGateways",
     "required key is missing"),
    ("prod", SET, "opensips.mediaGateways", [], "opensips.mediaGateways",
     "at least 1 item"),
    ("prod", SET, "namespace", "ACM_Prod", "acm-platform:namespace",
     "is not a Kubernetes name: 1 to 63 lower-case letters"),
    ("prod", SET, "compliance.sftpUser", "9root", "compliance.sftpUser",
     "is not a user name"),
    ("prod", SET, "environment", "staging", "acm-platform:environment",
     "is 'staging' but the stack is 'prod'"),
    ("prod", SET, "kubernetes.clusterIdentifier", None, "kubernetes.clusterIdentifier",
     "valid string"),
    ("prod", SET, "acmEngine.backupReplicas", 0, "acm-platform:(stack)",
     "acmEngine.backupReplicas is below 1"),
    ("prod", SET, "opensips.maxUdpWorkers", 2, "acm-platform:opensips:",
     "maxUdpWorkers 2 is below udpWorkers 8"),
    ("prod", SET, "opensips.resources.limits.memory", "512Mi", "acm-platform:opensips:",
     "resources.limits.memory 512Mi leaves 204 MiB of shared memory once 32 processes"),
    ("prod", SET, "haproxy.openFilesLimit", 20000, "acm-platform:haproxy:",
     "maxConnections 20000 needs about 41000 open files"),
    # A CPU-scaled part with no CPU request: utilization is undefined and the HPA never acts.
    ("prod", SET, "opensips.resources.requests.cpu", "0", "acm-platform:opensips:",
     "resources.requests.cpu 0 is zero, but the part is scaled on CPU"),
    ("prod", SET, "acmEngine.resources.requests.cpu", "0m", "acm-platform:acmEngine:",
     "resources.requests.cpu 0m is zero, but the part is scaled on CPU"),
    # Far beyond any cluster of this platform (a typo or a test value left in).
    ("prod", SET, "opensips.autoscaling.maxReplicas", 10000, "acm-platform:opensips:",
     "autoscaling.maxReplicas 10000 is above 100, the most one part may scale to"),
    ("prod", SET, "acmEngine.autoscaling.maxReplicas", 101, "acm-platform:acmEngine:",
     "autoscaling.maxReplicas 101 is above 100"),
    # Load shedding: a ceiling the pod's CPU cannot carry sheds nothing until it collapses.
    ("prod", SET, "opensips.loadShedding.callsPerSecond", 100000, "acm-platform:opensips:",
     "loadShedding.callsPerSecond 100000 is more than a pod with resources.limits.cpu 2 can "
     "screen"),
    ("prod", SET, "opensips.loadShedding.callsPerSecond", 0,
     "opensips.loadShedding.callsPerSecond", "greater than or equal to 1"),
    ("prod", DELETE, "opensips.loadShedding", None, "opensips.loadShedding",
     "required key is missing"),
    ("prod", SET, "opensips.loadShedding.retryAfterSeconds", 600,
     "opensips.loadShedding.retryAfterSeconds", "less than or equal to 60"),
    # Stand-ins belong to the local stack; there they need the stack to build their image.
    ("dev", SET, "mediaGatewayStandIn", {"imageBuild": {"registry": "registry.acm.internal/acm"}},
     "", "mediaGatewayStandIn: stand-ins are for the local stack only; environment 'dev'"),
    ("prod", SET, "acmEngine.standIn", True, "acm-platform:acmEngine",
     "standIn needs imageBuild"),
    ("local", DELETE, "yugabyte.imageBuild", None, "acm-platform:yugabyte",
     "standIn 'postgresql' needs imageBuild"),
    ("local", DELETE, "acmEngine.imageBuild", None, "acm-platform:acmEngine",
     "standIn needs imageBuild"),
    # The stand-ins run one image, built once: two builds of it would push one repository
    # twice at once.
    ("local", SET, "mediaGatewayStandIn.imageBuild",
     {"registry": "127.0.0.1:5000/acm", "baseImage": "127.0.0.1:5000/acm/other:1"},
     "acm-platform:(stack)", "acmEngine.imageBuild, mediaGatewayStandIn.imageBuild and "
                             "alertReceiverStandIn.imageBuild differ"),
    # Jobs that send keep what they sent and back their database up: refused before any
    # resource is created, not found missing seven years later.
    ("staging", DELETE, "compliance.evidenceStore", None, "acm-platform:compliance",
     "evidenceStore is required when the jobs send (dryRun false)"),
    ("dev", DELETE, "compliance.backup", None, "acm-platform:compliance",
     "backup is required when the jobs send (dryRun false)"),
    ("prod", SET, "compliance.evidenceStore.retentionDays", 365, "acm-platform:compliance",
     "evidenceStore.retentionDays 365 is below the regulator's seven years (2557 days)"),
    ("prod", SET, "compliance.evidenceStore.createBucket", True, "acm-platform:compliance",
     "the production bucket is the operator's"),
    ("prod", SET, "compliance.backup.recipient", "age1-not-a-recipient",
     "acm-platform:compliance.backup.recipient", "is not an age recipient"),
    ("prod", SET, "compliance.evidenceStore.bucket", "Evidence_Bucket",
     "acm-platform:compliance.evidenceStore.bucket", "is not an S3 bucket name"),
    ("local", SET, "compliance.evidenceStore.endpoint", "https://s3.elsewhere.example",
     "acm-platform:(stack)", "objectStoreStandIn serves https://object-store.acm-local.svc."
                             "cluster.local:7070: set compliance.evidenceStore.endpoint to it"),
    ("dev", SET, "objectStoreStandIn", {"imageBuild": {"registry": "registry.acm.internal/acm"},
                                        "storage": {"size": "1Gi"}},
     "", "objectStoreStandIn: stand-ins are for the local stack only"),
]


def _apply(values: dict[str, Any], operation: str, path: str, value: Any) -> None:
    if operation == SET:
        set_path(values, path, value)
    else:
        delete_path(values, path)


@pytest.mark.parametrize(
    ("stack", "operation", "path", "value", "key_path", "reason"),
    BAD_INPUTS,
    ids=[f"{case[2]}={case[3]!r}" if case[1] == SET else f"missing-{case[2]}"
         for case in BAD_INPUTS],
)
def test_bad_config_is_rejected_with_its_key_path(
    stack: str, operation: str, path: str, value: Any, key_path: str, reason: str
) -> None:
    values, secret_keys = stack_values(stack)
    if path == "grafanaAdminPassword":
        secret_keys = secret_keys - {"grafanaAdminPassword"}
    _apply(values, operation, path, value)
    with pytest.raises(StackConfigError) as caught:
        load_stack_config(stack, values, secret_keys)
    message = str(caught.value)
    assert key_path in message, message
    assert reason in message, message
    assert "nothing was deployed" in message


def test_at_least_forty_five_distinct_bad_inputs_are_covered() -> None:
    assert len({(case[2], repr(case[3])) for case in BAD_INPUTS}) >= 45


def test_no_setting_is_checked_by_a_bare_pattern() -> None:
    # pydantic's pattern message only prints the regular expression; every setting says what
    # it expects in words instead.
    import typing

    from pydantic import BaseModel

    from stacks.config import StackConfig

    bare: list[str] = []
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if any(getattr(item, "pattern", None) for item in field.metadata):
                bare.append(f"{model.__name__}.{name}")
            for kind in (field.annotation, *typing.get_args(field.annotation)):
                for inner in (kind, *typing.get_args(kind)):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        walk(inner)

    walk(StackConfig)
    assert len(seen) > 20 and bare == []


def test_schedules_are_read_by_croniter_names_included() -> None:
    from components.base.settings import cron_fields

    values, secret_keys = stack_values("prod")
    set_path(values, "compliance.reports.weekly.schedule", "0 11 * * MON")
    set_path(values, "compliance.reports.incidents.schedule", "*/5 * * * MON-FRI")
    config = load_stack_config("prod", values, secret_keys)
    assert config.compliance.reports.weekly.schedule == "0 11 * * MON"
    assert cron_fields("*/5 * * * MON-FRI")[4] == {1, 2, 3, 4, 5}
    assert cron_fields("0 0 * * 7")[4] == {0}  # Sunday written as 7


def test_several_problems_are_reported_together() -> None:
    values, secret_keys = stack_values("prod")
    set_path(values, "haproxy.image", "haproxy:latest")
    set_path(values, "opensips.ports.http", 0)
    with pytest.raises(StackConfigError) as caught:
        load_stack_config("prod", values, secret_keys)
    paths = [path for path, _ in caught.value.problems]
    assert "haproxy.image" in paths
    assert "opensips.ports.http" in paths


def test_invalid_config_registers_no_resource() -> None:
    # The program validates before it builds: the mocks must not see a single resource.
    import pulumi
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from stacks.render import render_values

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="acm-platform", stack="prod", preview=False)
    values, secret_keys = stack_values("prod")
    set_path(values, "opensips.autoscaling.maxReplicas", 1)
    with pytest.raises(StackConfigError):
        _sync_await(run_pulumi_func(lambda: render_values("prod", values, secret_keys)))
    assert mocks.resources == []


def test_valid_stacks_load() -> None:
    for stack in ("local", "dev", "staging", "prod"):
        values, secret_keys = stack_values(stack)
        config = load_stack_config(stack, values, secret_keys)
        assert config.environment == stack


@pytest.mark.parametrize(("edit", "expected"), [
    (("    replicas: 3\n", "\treplicas: 3\n"),
     "Pulumi.prod.yaml line 13, column 1: a tab character: YAML indents with spaces only"),
    (("  acm-platform:namespace: acm\n",
      "  acm-platform:namespace: acm\n  acm-platform:environment: prod\n"),
     "Pulumi.prod.yaml line 5, column 3: the key 'acm-platform:environment' is written twice "
     "(first on line 3)"),
    (("    replicas: 3\n", "    replicas: 3\n    replicas: 4\n"),
     "Pulumi.prod.yaml line 14, column 5: the key 'replicas' is written twice (first on line 13)"),
], ids=["tab", "top-level key twice", "nested key twice"])
def test_a_stack_file_that_is_not_clean_yaml_is_named_with_its_line(
        edit: tuple[str, str], expected: str, tmp_path: Path) -> None:
    from stacks.stack_files import ROOT, read_stack_file

    text = (ROOT / "Pulumi.prod.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "Pulumi.prod.yaml").write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(StackConfigError) as caught:
        read_stack_file("prod", tmp_path)
    assert expected in str(caught.value)
