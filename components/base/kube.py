"""Building blocks every component shares: labels, security contexts, probes, HPA/PDB specs.

One place decides what "hardened" and "highly available" mean, so that every workload of the
platform gets the same answer and the policy pack has one shape to check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

# The SDK loads its API groups lazily, on first attribute access; load the ones the platform
# uses at import time so that cost is not paid inside the program.
import pulumi_kubernetes.apps.v1
import pulumi_kubernetes.autoscaling.v2
import pulumi_kubernetes.batch.v1
import pulumi_kubernetes.core.v1
import pulumi_kubernetes.networking.v1
import pulumi_kubernetes.policy.v1
import pulumi_kubernetes.scheduling.v1

from components.base.settings import Autoscaling, Resources

PART_OF = "acm-platform"
CONFIG_HASH_ANNOTATION = "acm-platform.ng/config-hash"
RENDERED_CONFIG_LABEL = "acm-platform.ng/rendered-config"
ROLE_LABEL = "acm-platform.ng/role"
# The non-root identity every container runs as unless its image needs another.
DEFAULT_UID = 10001


@dataclass(frozen=True)
class Part:
    """A platform part's identity: its name and labels, shared by workloads and policies."""

    name: str
    component: str

    def selector(self, instance: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/instance": instance}

    def labels(self, instance: str) -> dict[str, str]:
        return {
            **self.selector(instance),
            "app.kubernetes.io/component": self.component,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": "pulumi",
        }


HAPROXY = Part("haproxy", "sip-load-balancer")
OPENSIPS = Part("opensips", "sip-proxy")
ACM_ENGINE = Part("acm-engine", "fraud-detection")
ACM_ENGINE_BACKUP = Part("acm-engine-backup", "fraud-detection")
DRAGONFLY = Part("dragonfly", "shared-state")
YB_MASTER = Part("yb-master", "database")
YB_TSERVER = Part("yb-tserver", "database")
CLICKHOUSE = Part("clickhouse", "analytics")
PROMETHEUS = Part("prometheus", "monitoring")
GRAFANA = Part("grafana", "monitoring")
ALERTMANAGER = Part("alertmanager", "monitoring")
COMPLIANCE = Part("ncc-compliance", "compliance")
COMPLIANCE_EXPORTER = Part("ncc-compliance-exporter", "compliance")
MEDIA_GATEWAY_STAND_IN = Part("media-gateway-stand-in", "stand-in")
ALERT_RECEIVER_STAND_IN = Part("alert-receiver-stand-in", "stand-in")
OBJECT_STORE_STAND_IN = Part("object-store", "stand-in")

SIP_PATH_PRIORITY_CLASS = "acm-sip-path"
PLATFORM_PRIORITY_CLASS = "acm-platform"


def metadata(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def container_security(
    add_capabilities: Sequence[str] = (), read_only_root: bool = True
) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if add_capabilities:
        capabilities["add"] = list(add_capabilities)
    return {
        "run_as_non_root": True,
        "allow_privilege_escalation": False,
        "privileged": False,
        "read_only_root_filesystem": read_only_root,
        "capabilities": capabilities,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def pod_security(uid: int = DEFAULT_UID) -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "run_as_user": uid,
        "run_as_group": uid,
        "fs_group": uid,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def resources(spec: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": spec.requests.cpu, "memory": spec.requests.memory},
        "limits": {"cpu": spec.limits.cpu, "memory": spec.limits.memory},
    }


def http_probe(path: str, port: int | str, period: int = 10, failures: int = 3,
               initial_delay: int = 5) -> dict[str, Any]:
    return {
        "http_get": {"path": path, "port": port},
        "period_seconds": period,
        "failure_threshold": failures,
        "initial_delay_seconds": initial_delay,
        "timeout_seconds": 2,
    }


def tcp_probe(port: int | str, period: int = 10, failures: int = 3,
              initial_delay: int = 5) -> dict[str, Any]:
    return {
        "tcp_socket": {"port": port},
        "period_seconds": period,
        "failure_threshold": failures,
        "initial_delay_seconds": initial_delay,
        "timeout_seconds": 2,
    }


def spread_across_nodes(
    selector: Mapping[str, str], node_key: str, zone_key: str
) -> list[dict[str, Any]]:
    """Hard spread over nodes (one bad node never holds two replicas' worth), soft over zones."""
    return [
        {
            "max_skew": 1,
            "topology_key": node_key,
            "when_unsatisfiable": "DoNotSchedule",
            "label_selector": {"match_labels": dict(selector)},
        },
        {
            "max_skew": 1,
            "topology_key": zone_key,
            "when_unsatisfiable": "ScheduleAnyway",
            "label_selector": {"match_labels": dict(selector)},
        },
    ]


def no_downtime_rollout() -> dict[str, Any]:
    return {"type": "RollingUpdate", "rolling_update": {"max_surge": 1, "max_unavailable": 0}}


def hpa_spec(target_name: str, scaling: Autoscaling) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "average_utilization": scaling.target_cpu_percent,
                },
            },
        }
    ]
    if scaling.target_memory_percent is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {
                        "type": "Utilization",
                        "average_utilization": scaling.target_memory_percent,
                    },
                },
            }
        )

    def rules(direction: Any) -> dict[str, Any]:
        return {
            "stabilization_window_seconds": direction.stabilization_window_seconds,
            "select_policy": direction.select_policy,
            "policies": [
                {"type": p.type, "value": p.value, "period_seconds": p.period_seconds}
                for p in direction.policies
            ],
        }

    return {
        "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": target_name},
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "metrics": metrics,
        "behavior": {"scale_up": rules(scaling.scale_up), "scale_down": rules(scaling.scale_down)},
    }


def content_hash(data: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode())
        digest.update(b"\0")
        digest.update(data[key].encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class BasicAuth:
    """A part's basic-auth account for its control or metrics endpoint: the user, and the
    Secret and key that hold its password (clients mount that key as a file)."""

    username: str
    secret: str
    key: str = "password"


class RenderedConfig:
    """An immutable ConfigMap named after its content.

    A change of content is a new name, so the pod template that mounts it changes and the
    workload rolls, create-before-delete (topology spec: a changed ConfigMap does not restart
    pods by itself). `hash` also goes into the pod template annotation, for the smoke tests.
    """

    def __init__(
        self,
        resource_name: str,
        base_name: str,
        namespace: str,
        labels: Mapping[str, str],
        data: Mapping[str, str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        self.hash = content_hash(data)
        self.name = f"{base_name}-{self.hash[:10]}"
        self.config_map = k8s.core.v1.ConfigMap(
            resource_name,
            metadata=metadata(self.name, namespace, {**labels, RENDERED_CONFIG_LABEL: "true"}),
            data=dict(data),
            immutable=True,
            opts=opts,
        )
