"""PlatformFoundation: the namespace and the policy every other part lives under."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict

from components.base import kube
from components.base.network import Flow, default_deny_spec, dns_egress_spec, policy_specs


class FoundationArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    namespace: str
    instance: str
    flows: list[Flow]
    service_accounts: list[kube.Part]


class PlatformFoundation(pulumi.ComponentResource):
    """Namespace, PriorityClasses, ServiceAccounts and the default-deny NetworkPolicies."""

    def __init__(
        self, name: str, args: FoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("acm:platform:PlatformFoundation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/part-of": kube.PART_OF,
                  "app.kubernetes.io/instance": args.instance,
                  "app.kubernetes.io/managed-by": "pulumi"}

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": args.namespace,
                "labels": {
                    **labels,
                    # OpenSIPS adds NET_ADMIN/NET_RAW, which the baseline level forbids; the
                    # policy pack checks every other restricted-profile rule per workload.
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/audit": "restricted",
                },
            },
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        # SIP-path pods must win against batch and analytics pods when a node is short.
        self.sip_priority = k8s.scheduling.v1.PriorityClass(
            f"{name}-sip-priority",
            metadata={"name": f"{kube.SIP_PATH_PRIORITY_CLASS}-{args.instance}", "labels": labels},
            value=1_000_000,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="ACM SIP call path: HAProxy, OpenSIPS, ACM engine",
            opts=child,
        )
        self.platform_priority = k8s.scheduling.v1.PriorityClass(
            f"{name}-platform-priority",
            metadata={"name": f"{kube.PLATFORM_PRIORITY_CLASS}-{args.instance}",
                      "labels": labels},
            value=100_000,
            global_default=False,
            preemption_policy="Never",
            description="ACM data stores, monitoring and compliance jobs",
            opts=child,
        )

        self.service_accounts = {
            part.name: k8s.core.v1.ServiceAccount(
                f"{name}-sa-{part.name}",
                metadata=kube.metadata(part.name, args.namespace, part.labels(args.instance)),
                # No workload of the platform talks to the Kubernetes API with its own token.
                automount_service_account_token=False,
                opts=in_namespace,
            )
            for part in args.service_accounts
        }

        self.network_policies = [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-default-deny",
                metadata=kube.metadata("default-deny", args.namespace, labels),
                spec=default_deny_spec(),
                opts=in_namespace,
            ),
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-dns",
                metadata=kube.metadata("allow-dns", args.namespace, labels),
                spec=dns_egress_spec(),
                opts=in_namespace,
            ),
        ]
        for part_name, spec in policy_specs(args.flows, args.instance).items():
            self.network_policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-netpol-{part_name}",
                    metadata=kube.metadata(f"flows-{part_name}", args.namespace, labels),
                    spec=spec,
                    opts=in_namespace,
                )
            )

        self.sip_priority_class = f"{kube.SIP_PATH_PRIORITY_CLASS}-{args.instance}"
        self.platform_priority_class = f"{kube.PLATFORM_PRIORITY_CLASS}-{args.instance}"
        self.register_outputs(
            {
                "namespace": self.namespace.metadata["name"],
                "sipPriorityClass": self.sip_priority_class,
                "platformPriorityClass": self.platform_priority_class,
            }
        )
