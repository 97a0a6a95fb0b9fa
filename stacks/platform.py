"""The ACM platform, composed: one place that reads like the architecture diagram.

    interconnect ──TCP/TLS──▶ HaproxyTier ──PROXY protocol──▶ OpenSipsCluster ──▶ media gateways
    interconnect ──UDP (LoadBalancer, Local)─────────────────▶      │  ▲
                                                   dispatcher (SIP) ▼  │ breaker state
                                                              AcmEngine  Dragonfly
                                                                   │
                                                     YugabyteDb, ClickHouse ◀── ComplianceJobs
    Monitoring scrapes every part.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.acm_engine import STORE_COMMANDS as ENGINE_STORE_COMMANDS
from components.acm_engine import STORE_KEY_PATTERNS as ENGINE_STORE_KEYS
from components.acm_engine import STORE_USER as ENGINE_STORE_USER
from components.acm_engine import AcmEngine, AcmEngineArgs
from components.alerting import (
    ALERTMANAGER_PORT,
    GOSSIP_PORT,
    credential_value,
    receiver_ports,
)
from components.base import kube
from components.base.images import StackImages
from components.base.network import Cidrs, Flow
from components.compliance import EXPORTER_PORT, ComplianceJobs, ComplianceJobsArgs
from components.datastores import (
    CLICKHOUSE_ENGINE_USER,
    CLICKHOUSE_USERS_SECRET,
    USERS_SECRET,
    YB_MASTER_WEB,
    YB_TSERVER_WEB,
    ClickHouse,
    ClickHouseArgs,
    Dragonfly,
    DragonflyArgs,
    StoreUser,
    YugabyteArgs,
    YugabyteDb,
    clickhouse_host,
)
from components.foundation import FoundationArgs, PlatformFoundation
from components.haproxy import (
    HaproxyArgs,
    HaproxyTier,
    opensips_admission_seconds,
    opensips_withdrawal_seconds,
)
from components.monitoring import PROMETHEUS_PORT, Monitoring, MonitoringArgs, ScrapeTarget
from components.opensips.args import OpenSipsArgs
from components.opensips.cluster import OpenSipsCluster
from components.opensips.config_files import SIDECAR_METRICS_PORT
from components.opensips.config_files import STORE_COMMANDS as OPENSIPS_STORE_COMMANDS
from components.opensips.config_files import STORE_KEY_PATTERNS as OPENSIPS_STORE_KEYS
from components.opensips.config_files import STORE_USER as OPENSIPS_STORE_USER
from components.stand_ins import (
    ALERT_RECEIVER_PORT,
    OBJECT_STORE_PORT,
    AlertReceiverStandIn,
    AlertReceiverStandInArgs,
    MediaGatewayStandIn,
    MediaGatewayStandInArgs,
    ObjectStoreStandIn,
    ObjectStoreStandInArgs,
)
from stacks.config import StackConfig

DATABASE_SECRET = "acm-database"


def traffic_flows(config: StackConfig) -> list[Flow]:
    """Every path the platform needs; NetworkPolicies deny all others."""
    haproxy = config.haproxy.ports
    opensips = config.opensips.ports
    engine = config.acm_engine
    peers = Cidrs("interconnect", tuple(config.network.sip_peer_cidrs))
    gateways = Cidrs("media-gateways", tuple(config.opensips.media_gateway_cidrs))
    regulator = Cidrs("ncc", tuple(config.compliance.ncc_egress_cidrs))
    gateway_ports = sorted({g.port for g in config.opensips.media_gateways})
    engines = [kube.ACM_ENGINE, kube.ACM_ENGINE_BACKUP]
    flows = [
        Flow(peers, kube.HAPROXY, (("TCP", haproxy.sip_tcp), ("TCP", haproxy.sip_tls)),
             "SIP over TCP/TLS enters through HAProxy"),
        # The PROXY-protocol sockets believe the address the header claims: HAProxy only.
        Flow(kube.HAPROXY, kube.OPENSIPS,
             (("TCP", opensips.proxy_tcp), ("TCP", opensips.proxy_tls), ("TCP", opensips.http)),
             "HAProxy forwards SIP with the caller's address, and the management port"),
        Flow(peers, kube.OPENSIPS,
             (("UDP", opensips.sip_udp), ("TCP", opensips.sip_tcp), ("TCP", opensips.sip_tls)),
             "SIP over UDP through the LoadBalancer Service, and direct TCP/TLS"),
        Flow(kube.OPENSIPS, gateways,
             tuple(("UDP", p) for p in gateway_ports) + tuple(("TCP", p) for p in gateway_ports),
             "calls continue to the media gateways"),
        Flow(kube.OPENSIPS, kube.DRAGONFLY, (("TCP", config.dragonfly.port),),
             "circuit-breaker state shared by every replica"),
        Flow(kube.YB_MASTER, kube.YB_MASTER, (("TCP", 7100),), "master Raft group"),
        Flow(kube.YB_TSERVER, kube.YB_MASTER, (("TCP", 7100),), "tservers heartbeat masters"),
        Flow(kube.YB_MASTER, kube.YB_TSERVER, (("TCP", 9100),), "masters manage tablets"),
        Flow(kube.YB_TSERVER, kube.YB_TSERVER, (("TCP", 9100),), "tablet replication"),
        Flow(kube.COMPLIANCE, kube.YB_TSERVER, (("TCP", config.yugabyte.ysql_port),),
             "report queries"),
        Flow(kube.COMPLIANCE, regulator,
             (("TCP", config.compliance.sftp_port), ("TCP", 443)),
             "SFTP upload and ATRS API"),
        Flow(kube.COMPLIANCE_EXPORTER, kube.YB_TSERVER, (("TCP", config.yugabyte.ysql_port),),
             "audit trail reads"),
        Flow(kube.PROMETHEUS, kube.COMPLIANCE_EXPORTER, (("TCP", EXPORTER_PORT),),
             "last accepted submission per report"),
        Flow(kube.GRAFANA, kube.PROMETHEUS, (("TCP", PROMETHEUS_PORT),), "dashboards"),
        Flow(kube.PROMETHEUS, kube.ALERTMANAGER, (("TCP", ALERTMANAGER_PORT),),
             "firing alerts, to every replica"),
        Flow(kube.ALERTMANAGER, kube.ALERTMANAGER, (("TCP", GOSSIP_PORT),),
             "replicas gossip silences and what was notified (mutual TLS, TCP only)"),
    ]
    store = config.compliance.evidence_store
    if config.object_store_stand_in is not None:
        flows.append(Flow(kube.COMPLIANCE, kube.OBJECT_STORE_STAND_IN,
                          (("TCP", OBJECT_STORE_PORT),),
                          "the evidence archive and the backups (the local object store)"))
    elif store is not None and store.egress_cidrs:
        flows.append(Flow(kube.COMPLIANCE, Cidrs("evidence-store", tuple(store.egress_cidrs)),
                          (("TCP", urlsplit(store.endpoint).port or 443),),
                          "the evidence archive and the backups"))
    alertmanager = config.monitoring.alertmanager
    if config.alert_receiver_stand_in is not None:
        flows.append(Flow(kube.ALERTMANAGER, kube.ALERT_RECEIVER_STAND_IN,
                          (("TCP", ALERT_RECEIVER_PORT),),
                          "notifications to the local stack's webhook receiver stand-in"))
    if alertmanager.egress_cidrs:
        flows.append(Flow(kube.ALERTMANAGER,
                          Cidrs("alert-receivers", tuple(alertmanager.egress_cidrs)),
                          tuple(("TCP", port) for port in receiver_ports(alertmanager)),
                          "notifications to the receivers"))
    for part in engines:
        flows += [
            Flow(kube.OPENSIPS, part, (("UDP", engine.sip_port), ("TCP", engine.sip_port)),
                 "screening requests and OPTIONS probes"),
            Flow(part, kube.DRAGONFLY, (("TCP", config.dragonfly.port),), "profile cache"),
            Flow(part, kube.YB_TSERVER, (("TCP", config.yugabyte.ysql_port),), "alerts, CDRs"),
            Flow(part, kube.CLICKHOUSE, (("TCP", config.clickhouse.http_port),), "analytics"),
            Flow(kube.PROMETHEUS, part, (("TCP", engine.http_port),), "metrics"),
        ]
    flows += [
        Flow(kube.PROMETHEUS, kube.OPENSIPS, (("TCP", opensips.http),), "metrics"),
        Flow(kube.PROMETHEUS, kube.OPENSIPS, (("TCP", SIDECAR_METRICS_PORT),),
             "the receive buffer OpenSIPS's sockets get (dispatcher-sync sidecar)"),
        Flow(kube.PROMETHEUS, kube.HAPROXY, (("TCP", haproxy.metrics),), "metrics"),
        Flow(kube.PROMETHEUS, kube.YB_MASTER, (("TCP", YB_MASTER_WEB),), "metrics"),
        Flow(kube.PROMETHEUS, kube.YB_TSERVER, (("TCP", YB_TSERVER_WEB),), "metrics"),
    ]
    return flows


@dataclass
class Platform:
    provider: k8s.Provider
    foundation: PlatformFoundation
    opensips: OpenSipsCluster
    haproxy: HaproxyTier
    acm_engine: AcmEngine


def build_platform(config: StackConfig, instance: str) -> Platform:
    """Create every resource of the stack from validated config."""
    namespace = config.namespace
    placement = {
        "node_topology_key": config.kubernetes.node_topology_key,
        "zone_topology_key": config.kubernetes.zone_topology_key,
    }
    # A stable identity: a rotated kubeconfig must not replace the provider and every resource.
    provider = k8s.Provider(
        "kubernetes",
        cluster_identifier=config.kubernetes.cluster_identifier,
        context=config.kubernetes.context,
        delete_unreachable=False,
    )
    on_cluster = pulumi.ResourceOptions(provider=provider)

    foundation = PlatformFoundation(
        "foundation",
        FoundationArgs(
            namespace=namespace, instance=instance, flows=traffic_flows(config),
            service_accounts=service_accounts(config),
        ),
        opts=on_cluster,
    )
    in_namespace = pulumi.ResourceOptions(provider=provider, depends_on=[foundation])
    # Every image the stack builds, each once; a part's pods wait for their image's push.
    images = StackImages("images")
    sip_path = {"namespace": namespace, "instance": instance, "images": images,
                "priority_class": foundation.sip_priority_class, **placement}
    backing = {"namespace": namespace, "instance": instance, "images": images,
               "priority_class": foundation.platform_priority_class, **placement}

    database_password = config.secrets.database_password
    # Each client of the breaker store is a user of its own, with what its room says it does.
    store_users = [
        StoreUser(OPENSIPS_STORE_USER, config.secrets.dragonfly_opensips_password,
                  OPENSIPS_STORE_KEYS, OPENSIPS_STORE_COMMANDS),
        StoreUser(ENGINE_STORE_USER, config.secrets.dragonfly_engine_password,
                  ENGINE_STORE_KEYS, ENGINE_STORE_COMMANDS),
    ]
    digest_key = config.secrets.secrets_digest_key
    dragonfly = Dragonfly("dragonfly", DragonflyArgs(settings=config.dragonfly,
                                                     users=store_users, digest_key=digest_key,
                                                     **backing),
                          opts=in_namespace)
    yugabyte = YugabyteDb("yugabyte", YugabyteArgs(settings=config.yugabyte,
                                                   database_secret_name=DATABASE_SECRET,
                                                   database_password=database_password,
                                                   digest_key=digest_key, **backing),
                          opts=in_namespace)
    if config.features.clickhouse:
        ClickHouse("clickhouse", ClickHouseArgs(
            settings=config.clickhouse, engine_password=config.secrets.clickhouse_engine_password,
            digest_key=digest_key, **backing), opts=in_namespace)
    # A part whose pods cannot be Ready without another's comes after it: OpenSIPS needs an
    # engine (its sidecar writes the dispatcher table from the engine's endpoints) and resolves
    # its media gateways when it starts; HAProxy is Ready with an OpenSIPS backend up. So a part
    # that fails (an image that did not build) stops the parts after it from being created,
    # and the up ends with its cause instead of waiting out the provider's 10 minutes.
    gateways: list[pulumi.Resource] = []
    if config.media_gateway_stand_in is not None:
        gateways.append(MediaGatewayStandIn("media-gateway-stand-in",
                            MediaGatewayStandInArgs(settings=config.media_gateway_stand_in,
                                                    **sip_path),
                            opts=in_namespace))
    database_secret = k8s.core.v1.Secret(
        "database-credentials",
        metadata=kube.metadata(DATABASE_SECRET, namespace,
                               {"app.kubernetes.io/part-of": kube.PART_OF,
                                "app.kubernetes.io/instance": instance}),
        type="Opaque",
        string_data={"username": "acm",
                     "password": pulumi.Output.secret(database_password)},
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[foundation],
                                    parent=yugabyte),
    )
    acm_engine = AcmEngine(
        "acm-engine",
        AcmEngineArgs(
            settings=config.acm_engine, database_host=yugabyte.host,
            database_port=yugabyte.ysql_port, database_secret_name=DATABASE_SECRET,
            dragonfly_host=dragonfly.host, dragonfly_port=dragonfly.port,
            dragonfly_secret_name=USERS_SECRET,
            clickhouse_url=clickhouse_url(config), database_password=database_password,
            store_password=config.secrets.dragonfly_engine_password, digest_key=digest_key,
            metrics_password=config.secrets.acm_engine_metrics_password,
            clickhouse_user=CLICKHOUSE_ENGINE_USER, clickhouse_secret_name=CLICKHOUSE_USERS_SECRET,
            clickhouse_password=config.secrets.clickhouse_engine_password,
            **sip_path,
        ),
        opts=pulumi.ResourceOptions(provider=provider,
                                    depends_on=[foundation, database_secret, dragonfly]),
    )
    opensips = OpenSipsCluster(
        "opensips",
        OpenSipsArgs(
            settings=config.opensips, features=config.features,
            acm_engine_domain=acm_engine.sip_domain,
            acm_engine_backup_domain=acm_engine.backup_sip_domain,
            acm_engine_port=acm_engine.sip_port, dragonfly_host=dragonfly.host,
            dragonfly_port=dragonfly.port,
            dragonfly_password=config.secrets.dragonfly_opensips_password,
            digest_key=digest_key,
            sidecar_image=config.opensips.dispatcher_sync_image,
            sip_peer_cidrs=config.network.sip_peer_cidrs,
            tls_certificate=config.secrets.sip_tls_certificate,
            tls_private_key=config.secrets.sip_tls_private_key,
            control_password=config.secrets.opensips_control_password,
            admission_seconds=opensips_admission_seconds(config.haproxy.health_check),
            withdrawal_seconds=opensips_withdrawal_seconds(), **sip_path,
        ),
        opts=pulumi.ResourceOptions(provider=provider,
                                    depends_on=[foundation, acm_engine, *gateways]),
    )
    haproxy = HaproxyTier(
        "haproxy",
        HaproxyArgs(
            settings=config.haproxy, features=config.features,
            opensips_headless_domain=opensips.headless_domain,
            opensips_ports=config.opensips.ports,
            opensips_max_replicas=config.opensips.autoscaling.max_replicas,
            sip_peer_cidrs=config.network.sip_peer_cidrs,
            control_password=config.secrets.haproxy_control_password, digest_key=digest_key,
            **sip_path,
        ),
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[foundation, opensips]),
    )
    compliance = None
    evidence_ca = (config.compliance.evidence_store.ca_certificate
                   if config.compliance.evidence_store is not None else None)
    store_dependencies: list[pulumi.Resource] = []
    if config.object_store_stand_in is not None:
        store = ObjectStoreStandIn(
            "object-store",
            ObjectStoreStandInArgs(
                settings=config.object_store_stand_in,
                access_key_id=config.secrets.evidence_store_access_key_id,
                secret_access_key=config.secrets.evidence_store_secret_access_key,
                digest_key=digest_key, **backing),
            opts=in_namespace)
        evidence_ca = store.ca_certificate
        store_dependencies.append(store)
    if config.features.compliance_jobs:
        compliance = ComplianceJobs(
            "compliance",
            ComplianceJobsArgs(
                settings=config.compliance, database_host=yugabyte.host,
                database_port=yugabyte.ysql_port,
                secrets=config.secrets.model_dump(), evidence_ca_certificate=evidence_ca,
                **backing,
            ),
            opts=pulumi.ResourceOptions(provider=provider,
                                        depends_on=[foundation, *store_dependencies]),
        )
    if config.alert_receiver_stand_in is not None:
        AlertReceiverStandIn(
            "alert-receiver-stand-in",
            AlertReceiverStandInArgs(
                settings=config.alert_receiver_stand_in,
                password=credential_value(config.secrets.alertmanager_credentials,
                                          config.alert_receiver_stand_in.credential),
                digest_key=digest_key, **backing),
            opts=in_namespace)
    Monitoring(
        "monitoring",
        MonitoringArgs(
            environment=config.environment, settings=config.monitoring,
            grafana_enabled=config.features.grafana,
            grafana_admin_password=config.secrets.grafana_admin_password,
            prometheus_control_password=config.secrets.prometheus_control_password,
            alertmanager_control_password=config.secrets.alertmanager_control_password,
            alertmanager_credentials=config.secrets.alertmanager_credentials,
            digest_key=config.secrets.secrets_digest_key,
            scrape_targets=scrape_targets(config, opensips, haproxy, acm_engine, compliance),
            **backing,
        ),
        opts=in_namespace,
    )
    return Platform(provider, foundation, opensips, haproxy, acm_engine)


def service_accounts(config: StackConfig) -> list[kube.Part]:
    parts = [kube.HAPROXY, kube.OPENSIPS, kube.ACM_ENGINE, kube.ACM_ENGINE_BACKUP,
             kube.DRAGONFLY, kube.YB_MASTER, kube.YB_TSERVER, kube.CLICKHOUSE, kube.PROMETHEUS,
             kube.GRAFANA, kube.ALERTMANAGER, kube.COMPLIANCE, kube.COMPLIANCE_EXPORTER]
    if config.media_gateway_stand_in is not None:
        parts.append(kube.MEDIA_GATEWAY_STAND_IN)
    if config.alert_receiver_stand_in is not None:
        parts.append(kube.ALERT_RECEIVER_STAND_IN)
    if config.object_store_stand_in is not None:
        parts.append(kube.OBJECT_STORE_STAND_IN)
    return parts


def clickhouse_url(config: StackConfig) -> str:
    return f"http://{clickhouse_host(config.namespace)}:{config.clickhouse.http_port}"


def scrape_targets(
    config: StackConfig, opensips: OpenSipsCluster, haproxy: HaproxyTier, acm_engine: AcmEngine,
    compliance: ComplianceJobs | None,
) -> list[ScrapeTarget]:
    suffix = f"{config.namespace}.svc.cluster.local"
    targets = [
        ScrapeTarget("opensips", opensips.headless_domain, config.opensips.ports.http,
                     basic_auth=opensips.control_account),
        ScrapeTarget("opensips-sidecar", opensips.headless_domain, SIDECAR_METRICS_PORT,
                     basic_auth=opensips.control_account),
        ScrapeTarget("haproxy", f"haproxy-admin.{suffix}", config.haproxy.ports.metrics,
                     basic_auth=haproxy.control_account),
        ScrapeTarget("acm-engine", acm_engine.sip_domain, config.acm_engine.http_port,
                     basic_auth=acm_engine.metrics_account),
    ]
    # PostgreSQL in YugabyteDB's place serves no metrics page.
    if config.yugabyte.stand_in is None:
        targets += [
            ScrapeTarget("yb-master", f"{kube.YB_MASTER.name}-headless.{suffix}",
                         YB_MASTER_WEB, "/prometheus-metrics"),
            ScrapeTarget("yb-tserver", f"{kube.YB_TSERVER.name}-headless.{suffix}",
                         YB_TSERVER_WEB, "/prometheus-metrics"),
        ]
    if acm_engine.backup_sip_domain is not None:
        targets.append(ScrapeTarget("acm-engine-backup", acm_engine.backup_sip_domain,
                                    config.acm_engine.http_port,
                                    basic_auth=acm_engine.metrics_account))
    if compliance is not None:
        targets.append(ScrapeTarget("ncc-compliance", compliance.exporter_domain, EXPORTER_PORT,
                                    basic_auth=compliance.exporter_account))
    return targets
