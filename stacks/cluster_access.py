"""Is the stack's cluster there? Asked before any resource is registered.

Against a cluster it cannot reach, the Kubernetes provider previews from inputs alone and the
preview looks green; `pulumi up` then fails (topology spec, "Known traps": a kubeconfig context
named `acm-local` where the control plane wrote `kwok-acm-local` did exactly that). So the
program asks first: the kubeconfig the provider will read must have the stack's context, and
that cluster's API server must answer. A stack that previews in CI without cluster credentials
says so with `kubernetes.previewWithoutCluster: true`; its previews then warn, loudly, and
`up` still refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.config.config_exception import ConfigException

from stacks.config import PROJECT, KubernetesSettings

ANSWER_SECONDS = 5.0


class ClusterUnreachable(RuntimeError):
    """The stack's cluster cannot be used; the message says which setting and what to do."""


@dataclass(frozen=True)
class ClusterAnswer:
    server: str
    version: str


def kubeconfig_location() -> str:
    """Where the provider looks, in the same order: $KUBECONFIG, then ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def reach_cluster(settings: KubernetesSettings) -> ClusterAnswer:
    """The API server's address and version, or `ClusterUnreachable` saying why not."""
    location = kubeconfig_location()
    context = settings.context
    configuration = kube_client.Configuration()
    try:
        kube_config.load_kube_config(
            context=context, client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError) as error:
        wanted = f"context {context!r}" if context else "its current context"
        raise ClusterUnreachable(
            f"{PROJECT}:kubernetes.context: the kubeconfig {location} has no usable {wanted} "
            f"({error}); set {PROJECT}:kubernetes.context to a context it defines, or point "
            "KUBECONFIG at the cluster's kubeconfig") from None
    try:
        with kube_client.ApiClient(configuration) as api:
            info = kube_client.VersionApi(api).get_code(_request_timeout=ANSWER_SECONDS)
    except Exception as error:  # any transport or API failure means the same: not reachable
        reason = getattr(error, "reason", None) or type(error).__name__
        raise ClusterUnreachable(
            f"{PROJECT}:kubernetes: the cluster at {configuration.host} (kubeconfig {location}, "
            f"context {context or '(current)'}) did not answer within {ANSWER_SECONDS:.0f} s: "
            f"{reason}") from None
    return ClusterAnswer(configuration.host, str(info.git_version))
