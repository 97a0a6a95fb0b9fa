"""The shape of a call-path Deployment: no-downtime rollout, node spread, PDB, optional HPA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.base import kube
from components.base.credentials import SECRETS_DIGEST_ANNOTATION
from components.base.settings import Autoscaling, Disruption


@dataclass(frozen=True)
class DeploymentSpec:
    part: kube.Part
    namespace: str
    instance: str
    containers: Sequence[dict[str, Any]]
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    # Exactly one of: an HPA's bounds (then spec.replicas is left to the HPA), or fixed replicas.
    autoscaling: Autoscaling | None = None
    replicas: int | None = None
    disruption: Disruption | None = None
    # Native sidecars (restartPolicy Always) start before, and outlive, the main containers.
    init_containers: Sequence[dict[str, Any]] = ()
    volumes: Sequence[dict[str, Any]] = ()
    config_hash: str | None = None
    # The keyed digest of the Secret contents the containers read at start
    # (components/base/credentials.py): a rotated secret rolls exactly its readers.
    secrets_digest: str | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    termination_grace_seconds: int = 30
    # How long a new pod must stay Ready before it counts as available and the rollout stops
    # the next old one: the time until traffic can really reach it.
    min_ready_seconds: int = 5
    uid: int = kube.DEFAULT_UID


@dataclass
class DeploymentParts:
    deployment: k8s.apps.v1.Deployment
    hpa: k8s.autoscaling.v2.HorizontalPodAutoscaler | None
    pdb: k8s.policy.v1.PodDisruptionBudget | None


def managed_deployment(
    resource_prefix: str, spec: DeploymentSpec, parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> DeploymentParts:
    if (spec.autoscaling is None) == (spec.replicas is None):
        raise ValueError(f"{spec.part.name}: give either autoscaling or replicas, not both")
    labels = {**spec.part.labels(spec.instance), **spec.extra_labels}
    selector = spec.part.selector(spec.instance)
    annotations = {}
    if spec.config_hash is not None:
        annotations[kube.CONFIG_HASH_ANNOTATION] = spec.config_hash
    if spec.secrets_digest is not None:
        annotations[SECRETS_DIGEST_ANNOTATION] = spec.secrets_digest
    deployment_spec: dict[str, Any] = {
        "selector": {"match_labels": selector},
        "strategy": kube.no_downtime_rollout(),
        "revision_history_limit": 5,
        "min_ready_seconds": spec.min_ready_seconds,
        "template": {
            "metadata": {"labels": labels, "annotations": annotations},
            "spec": {
                "service_account_name": spec.part.name,
                "automount_service_account_token": False,
                "priority_class_name": spec.priority_class,
                "security_context": kube.pod_security(spec.uid),
                "termination_grace_period_seconds": spec.termination_grace_seconds,
                "topology_spread_constraints": kube.spread_across_nodes(
                    selector, spec.node_topology_key, spec.zone_topology_key
                ),
                "containers": list(spec.containers),
                "volumes": list(spec.volumes),
            },
        },
    }
    if spec.init_containers:
        deployment_spec["template"]["spec"]["init_containers"] = list(spec.init_containers)
    # With an HPA, spec.replicas stays out of the program: under server-side apply the program
    # and the HPA controller would fight over the field on every `pulumi up`.
    if spec.replicas is not None:
        deployment_spec["replicas"] = spec.replicas
    deployment = k8s.apps.v1.Deployment(
        f"{resource_prefix}-deployment",
        metadata=kube.metadata(spec.part.name, spec.namespace, labels),
        spec=deployment_spec,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )
    hpa = None
    if spec.autoscaling is not None:
        hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{resource_prefix}-hpa",
            metadata=kube.metadata(spec.part.name, spec.namespace, labels),
            spec=kube.hpa_spec(spec.part.name, spec.autoscaling),
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[deployment]),
        )
    pdb = None
    if spec.disruption is not None:
        pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{resource_prefix}-pdb",
            metadata=kube.metadata(spec.part.name, spec.namespace, labels),
            spec={
                "min_available": spec.disruption.min_available,
                "selector": {"match_labels": selector},
            },
            opts=pulumi.ResourceOptions(parent=parent),
        )
    return DeploymentParts(deployment, hpa, pdb)


def service(
    resource_name: str,
    name: str,
    part: kube.Part,
    namespace: str,
    instance: str,
    ports: Sequence[dict[str, Any]],
    parent: pulumi.Resource,
    **spec: Any,
) -> k8s.core.v1.Service:
    return k8s.core.v1.Service(
        resource_name,
        metadata=kube.metadata(name, namespace, part.labels(instance)),
        spec={"selector": part.selector(instance), "ports": list(ports), **spec},
        opts=pulumi.ResourceOptions(parent=parent),
    )
