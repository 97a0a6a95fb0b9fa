"""The Pulumi program: validate the stack's config, make sure its cluster answers, then build
the platform. Both checks run before a single resource is registered."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import pulumi

from stacks.cluster_access import ClusterUnreachable, reach_cluster
from stacks.config import StackConfigError, load_stack_config
from stacks.platform import build_platform
from stacks.stack_files import runtime_values

# The language host's code for "the program ended after a message the user has seen".
EXITED_AFTER_REPORTED_ERROR = 32


def end_quietly_when_the_engine_stops_the_program() -> None:
    """When a resource fails, the engine reports its error and then ends the program with
    SIGINT, often while registrations that can no longer finish are still outstanding. Python's
    default turns that signal into a KeyboardInterrupt whose traceback, from the language
    host's executor, the user then reads under the real error as if the program had crashed.
    The program holds no state of its own (the engine keeps it), so it just ends."""
    def stop(signum: int, frame: FrameType | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXITED_AFTER_REPORTED_ERROR)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, stop)


def main() -> None:
    end_quietly_when_the_engine_stops_the_program()
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
