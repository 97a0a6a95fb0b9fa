"""What the OpenSIPS part is given: its settings and where its neighbours are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from components.base.images import ImageSource
from components.base.settings import Features
from components.opensips.settings import OpenSipsConfig


class OpenSipsArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    settings: OpenSipsConfig
    features: Features
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    acm_engine_domain: str
    acm_engine_backup_domain: str | None
    acm_engine_port: int
    dragonfly_host: str
    dragonfly_port: int
    dragonfly_password: str
    """OpenSIPS's ACL user in the breaker store (STORE_USER): its password."""
    sidecar_image: str
    sip_peer_cidrs: list[str]
    tls_certificate: str
    tls_private_key: str
    control_password: str
    """Basic auth of the httpd (MI and metrics): OpenSIPS, its sidecar and Prometheus use it."""
    digest_key: str
    """The stack's secretsDigestKey (the pod template's digest of the Secrets read at start)."""
    admission_seconds: int = 5
    """The rollout's timing, from how HAProxy discovers and checks the pods (stacks compose it)."""
    withdrawal_seconds: int = 0
