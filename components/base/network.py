"""Who may talk to whom: the platform's traffic flows, and the NetworkPolicies they become.

The namespace is default-deny in both directions; each `Flow` opens exactly one path. Every
flow yields an ingress rule on the receiving part and an egress rule on the sending part, so a
path is open only when both ends agree, and the policy reads like the call-path diagram.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from components.base.kube import Part

Protocol = Literal["TCP", "UDP"]


@dataclass(frozen=True)
class Cidrs:
    """Peers outside the cluster (interconnect partners, media gateways, the regulator)."""

    label: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class Flow:
    source: Part | Cidrs
    destination: Part | Cidrs
    ports: tuple[tuple[Protocol, int], ...]
    why: str


def _peer(peer: Part | Cidrs, instance: str) -> list[dict[str, Any]]:
    if isinstance(peer, Part):
        return [{"pod_selector": {"match_labels": peer.selector(instance)}}]
    return [{"ip_block": {"cidr": block}} for block in peer.blocks]


def _ports(ports: tuple[tuple[Protocol, int], ...]) -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": port} for protocol, port in ports]


def policy_specs(flows: list[Flow], instance: str) -> dict[str, dict[str, Any]]:
    """One NetworkPolicy spec per in-cluster part, holding its ingress and egress rules."""
    ingress: dict[Part, list[dict[str, Any]]] = defaultdict(list)
    egress: dict[Part, list[dict[str, Any]]] = defaultdict(list)
    for flow in flows:
        if isinstance(flow.destination, Part):
            ingress[flow.destination].append(
                {"from": _peer(flow.source, instance), "ports": _ports(flow.ports)}
            )
        if isinstance(flow.source, Part):
            egress[flow.source].append(
                {"to": _peer(flow.destination, instance), "ports": _ports(flow.ports)}
            )
    specs: dict[str, dict[str, Any]] = {}
    for part in sorted(set(ingress) | set(egress), key=lambda p: p.name):
        types = []
        spec: dict[str, Any] = {"pod_selector": {"match_labels": part.selector(instance)}}
        if part in ingress:
            spec["ingress"] = ingress[part]
            types.append("Ingress")
        if part in egress:
            spec["egress"] = egress[part]
            types.append("Egress")
        spec["policy_types"] = types
        specs[part.name] = spec
    return specs


def default_deny_spec() -> dict[str, Any]:
    return {"pod_selector": {}, "policy_types": ["Ingress", "Egress"]}


def dns_egress_spec() -> dict[str, Any]:
    # Every pod resolves Service names; nothing else leaves the namespace without a Flow.
    return {
        "pod_selector": {},
        "policy_types": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespace_selector": {
                            "match_labels": {"kubernetes.io/metadata.name": "kube-system"}
                        },
                        "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        ],
    }
