"""The Pulumi program: validate the stack's config, make sure its cluster answers, then build
the platform. Both checks run before a single resource is registered."""

from __future__ import annotations

import pulumi

from stacks.cluster_access import ClusterUnreachable, reach_cluster
from stacks.config import StackConfigError, load_stack_config
from stacks.platform import build_platform
from stacks.stack_files import runtime_values


def main() -> None:
    stack = pulumi.get_stack()
    values, secret_keys = runtime_values()
    # Both checks raise before any resource is registered, so a bad key or a missing cluster
    # never half-deploys a stack. RunError: the engine prints the message, not a traceback.
    try:
        config = load_stack_config(stack, values, secret_keys)
    except StackConfigError as error:
        raise pulumi.RunError(str(error)) from None
    try:
        answer = reach_cluster(config.kubernetes)
        pulumi.log.info(f"cluster {config.kubernetes.cluster_identifier}: {answer.server} "
                        f"(Kubernetes {answer.version})")
    except ClusterUnreachable as error:
        if not (pulumi.runtime.is_dry_run() and config.kubernetes.preview_without_cluster):
            raise pulumi.RunError(str(error)) from None
        pulumi.warn(f"{error}. This preview shows the program's inputs only, not what the "
                    "cluster would do with them (kubernetes.previewWithoutCluster is true).")
    platform = build_platform(config, instance=stack)
    pulumi.export("namespace", config.namespace)
    pulumi.export("opensipsConfigHash", platform.opensips.config.hash)
    pulumi.export("haproxyConfigHash", platform.haproxy.config.hash)
