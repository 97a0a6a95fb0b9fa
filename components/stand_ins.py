"""Stand-ins for what a cluster without the real thing cannot have (the local stack): the media
gateways the calls go on to, and the image of the SIP stand-ins (the ACM engine's too). They are
SIPp with the scenarios the SIP tests use, so a call through the deployed platform meets the
same far ends as one in the SIP lab."""

from __future__ import annotations

import pulumi
from pydantic import BaseModel, ConfigDict

from components.base import kube
from components.base.images import ImageRecipe, ImageSource
from components.base.settings import ImageBuild, Model, Port
from components.base.workload import DeploymentSpec, managed_deployment, service

SIP_STAND_IN_IMAGE = ImageRecipe(
    "sip-stand-in", "images/sip-stand-in/Dockerfile",
    ("images/sip-stand-in", "tests/sip/scenarios/acm_engine.xml",
     "tests/sip/scenarios/media_gateway.xml"))
STAND_IN_HTTP_PORT = 8080


# --- settings: acm-platform:mediaGatewayStandIn -------------------------------------------


class MediaGatewayStandInConfig(Model):
    image_build: ImageBuild
    sip_port: Port = 5060


# --- the component ------------------------------------------------------------------------


class MediaGatewayStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    # Where the part's images come from: the stack's StackImages (each built once).
    images: ImageSource

    namespace: str
    instance: str
    settings: MediaGatewayStandInConfig
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


class MediaGatewayStandIn(pulumi.ComponentResource):
    """One SIPp media gateway (200, then BYE) behind a headless Service; the stack's
    opensips.mediaGateways name its domain."""

    def __init__(self, name: str, args: MediaGatewayStandInArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:MediaGatewayStandIn", name, None, opts)
        part = kube.MEDIA_GATEWAY_STAND_IN
        sip_port = args.settings.sip_port
        container = {
            "name": "media-gateway",
            "image": args.images.image(SIP_STAND_IN_IMAGE, "unused:pinned",
                                       args.settings.image_build),
            "args": ["gateway", "--sip-port", str(sip_port),
                     "--http-port", str(STAND_IN_HTTP_PORT)],
            "ports": [
                {"name": "sip-udp", "container_port": sip_port, "protocol": "UDP"},
                {"name": "http", "container_port": STAND_IN_HTTP_PORT, "protocol": "TCP"},
            ],
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                          "limits": {"cpu": "500m", "memory": "128Mi"}},
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/health", "http", failures=3),
            "readiness_probe": kube.http_probe("/health", "http", period=5),
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        }
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            replicas=1, volumes=[{"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}],
        )
        managed_deployment(name, spec, self)
        service(f"{name}-service", part.name, part, args.namespace, args.instance,
                [{"name": "sip-udp", "port": sip_port, "target_port": "sip-udp",
                  "protocol": "UDP"}],
                self, cluster_ip="None", publish_not_ready_addresses=False)
        self.domain = f"{part.name}.{args.namespace}.svc.cluster.local"
        self.register_outputs({"domain": self.domain})
