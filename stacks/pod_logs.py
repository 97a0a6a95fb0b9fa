"""A pod's log as text.

The Kubernetes client's ``read_namespaced_pod_log`` tries ``json.loads`` on the body and otherwise
returns ``str(bytes)``: a ``"b'...'"`` literal with escaped newlines, or, for a log that happens
to be one JSON document, a dict. Reading the raw body and decoding it ourselves gives the log as
the container wrote it.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as kube_client


def pod_log(core: kube_client.CoreV1Api, pod: str, namespace: str, **options: Any) -> str:
    """The log of ``pod`` (``container=``, ``since_seconds=`` ... as the API takes them)."""
    response = core.read_namespaced_pod_log(pod, namespace, _preload_content=False, **options)
    return bytes(response.data).decode("utf-8", errors="replace")
