"""The shape every stateful part shares: headless Service, StatefulSet, volume claim template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.base import kube
from components.base.settings import Resources, Storage

DATA_VOLUME = "data"


@dataclass(frozen=True)
class StatefulTierSpec:
    part: kube.Part
    namespace: str
    instance: str
    image: pulumi.Input[str]
    replicas: int
    resources: Resources
    storage: Storage
    ports: Mapping[str, int]
    data_path: str
    liveness: dict[str, Any]
    readiness: dict[str, Any]
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    command: Sequence[str] = ()
    args: Sequence[str] = ()
    env: Sequence[dict[str, Any]] = ()
    # Images whose processes write outside the data volume get a scratch emptyDir here.
    scratch_paths: Sequence[str] = ("/tmp",)
    uid: int = kube.DEFAULT_UID
    extra_annotations: Mapping[str, str] = field(default_factory=dict)
    # (volume name, ConfigMap name, mount path) of a rendered config, mounted read-only.
    config_volume: tuple[str, str, str] | None = None
    # (volume name, Secret name, mount path) of credentials, mounted read-only as files.
    secret_volume: tuple[str, str, str] | None = None
    more_secret_volumes: Sequence[tuple[str, str, str]] = ()
    # (mount path, [(Secret name, key, file name)]): keys of other parts' Secrets, e.g. the
    # passwords Prometheus scrapes with, gathered read-only in one folder.
    credential_files: tuple[str, Sequence[tuple[str, str, str]]] | None = None


@dataclass
class StatefulTier:
    headless_service: k8s.core.v1.Service
    stateful_set: k8s.apps.v1.StatefulSet
    service_name: str


def stateful_tier(
    resource_prefix: str, spec: StatefulTierSpec, parent: pulumi.Resource
) -> StatefulTier:
    opts = pulumi.ResourceOptions(parent=parent)
    labels = spec.part.labels(spec.instance)
    selector = spec.part.selector(spec.instance)
    service_name = f"{spec.part.name}-headless"
    service_ports = [
        {"name": port_name, "port": port, "target_port": port_name, "protocol": "TCP"}
        for port_name, port in spec.ports.items()
    ]
    headless = k8s.core.v1.Service(
        f"{resource_prefix}-headless",
        metadata=kube.metadata(service_name, spec.namespace, labels),
        spec={
            "cluster_ip": "None",
            "selector": selector,
            "ports": service_ports,
            # Peers must find each other while they bootstrap, before they are Ready.
            "publish_not_ready_addresses": True,
        },
        opts=opts,
    )
    scratch_mounts = [
        {"name": f"scratch-{index}", "mount_path": path}
        for index, path in enumerate(spec.scratch_paths)
    ]
    config_mounts: list[dict[str, Any]] = []
    config_volumes: list[dict[str, Any]] = []
    if spec.config_volume is not None:
        volume_name, config_map_name, mount_path = spec.config_volume
        config_mounts.append({"name": volume_name, "mount_path": mount_path, "read_only": True})
        config_volumes.append({"name": volume_name, "config_map": {"name": config_map_name}})
    secret_volumes = ([spec.secret_volume] if spec.secret_volume else []) + list(
        spec.more_secret_volumes)
    for volume_name, secret_name, mount_path in secret_volumes:
        config_mounts.append({"name": volume_name, "mount_path": mount_path, "read_only": True})
        config_volumes.append({"name": volume_name,
                               "secret": {"secret_name": secret_name, "default_mode": 0o440}})
    if spec.credential_files is not None:
        mount_path, files = spec.credential_files
        config_mounts.append({"name": "credentials", "mount_path": mount_path,
                              "read_only": True})
        config_volumes.append({"name": "credentials", "projected": {
            "default_mode": 0o440,
            "sources": [{"secret": {"name": secret, "items": [{"key": key, "path": file}]}}
                        for secret, key, file in files]}})
    container: dict[str, Any] = {
        "name": spec.part.name,
        "image": spec.image,
        "ports": [
            {"name": port_name, "container_port": port, "protocol": "TCP"}
            for port_name, port in spec.ports.items()
        ],
        "resources": kube.resources(spec.resources),
        "security_context": kube.container_security(),
        "liveness_probe": spec.liveness,
        "readiness_probe": spec.readiness,
        "volume_mounts": [
            {"name": DATA_VOLUME, "mount_path": spec.data_path}, *scratch_mounts, *config_mounts
        ],
        "env": [
            {"name": "POD_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}},
            *spec.env,
        ],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    volume_claim: dict[str, Any] = {
        "metadata": {"name": DATA_VOLUME, "labels": labels},
        "spec": {
            "access_modes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.storage_class is not None:
        volume_claim["spec"]["storage_class_name"] = spec.storage.storage_class
    stateful_set = k8s.apps.v1.StatefulSet(
        f"{resource_prefix}-statefulset",
        metadata=kube.metadata(spec.part.name, spec.namespace, labels),
        spec={
            "service_name": service_name,
            "replicas": spec.replicas,
            "pod_management_policy": "Parallel",
            "update_strategy": {"type": "RollingUpdate"},
            "selector": {"match_labels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(spec.extra_annotations)},
                "spec": {
                    "service_account_name": spec.part.name,
                    "automount_service_account_token": False,
                    "priority_class_name": spec.priority_class,
                    "security_context": kube.pod_security(spec.uid),
                    "topology_spread_constraints": kube.spread_across_nodes(
                        selector, spec.node_topology_key, spec.zone_topology_key
                    ),
                    "containers": [container],
                    "volumes": [
                        *(
                            {"name": f"scratch-{index}", "empty_dir": {"size_limit": "256Mi"}}
                            for index, _ in enumerate(spec.scratch_paths)
                        ),
                        *config_volumes,
                    ],
                },
            },
            "volume_claim_templates": [volume_claim],
        },
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[headless]),
    )
    return StatefulTier(headless, stateful_set, service_name)


def quorum_disruption_budget(
    resource_name: str, spec: StatefulTierSpec, parent: pulumi.Resource
) -> k8s.policy.v1.PodDisruptionBudget | None:
    """At most one member down at a time: a Raft group of 3 keeps its majority."""
    if spec.replicas < 2:
        return None
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name,
        metadata=kube.metadata(spec.part.name, spec.namespace, spec.part.labels(spec.instance)),
        spec={
            "max_unavailable": 1,
            "selector": {"match_labels": spec.part.selector(spec.instance)},
        },
        opts=pulumi.ResourceOptions(parent=parent),
    )
