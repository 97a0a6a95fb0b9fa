"""Monitoring: Prometheus (scrape config, alert rules, where to send alerts), Alertmanager (its
own room, components/alerting.py) and Grafana (datasource, dashboards)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field

from components.alerting import (
    Alertmanager,
    AlertmanagerArgs,
    AlertmanagerConfig,
    AlertmanagerEndpoints,
    WebUrl,
)
from components.base import kube
from components.base.credentials import secrets_digest, web_config
from components.base.images import ImageRecipe, ImageSource
from components.base.settings import (
    ImageBuild,
    ImageRef,
    Model,
    Resources,
    Storage,
)
from components.base.stateful import StatefulTierSpec, stateful_tier
from components.base.templating import render
from components.base.workload import DeploymentSpec, managed_deployment, service
from components.opensips.config_files import exported_metric

PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
GRAFANA_ADMIN_DIR = "/etc/grafana/admin"
# Metrics the platform's parts export, by role; the alert rules and dashboards use only these.
METRICS = {
    "breaker_open": exported_metric("breaker_open"),
    "calls_total": exported_metric("calls_total"),
    "fraud_detected": exported_metric("fraud_detected"),
    "failover_events": exported_metric("failover_events"),
    "unscreened_calls": exported_metric("unscreened_calls"),
    "shed_calls": exported_metric("shed_calls"),
    # The ACM engine image's contract: a Prometheus histogram of detection latency.
    "detection_latency_bucket": "acm_detection_latency_seconds_bucket",
    # Served by the compliance jobs' audit exporter (jobs/): last accepted submission per report.
    "last_accepted": "ncc_report_last_accepted_timestamp_seconds",
    "incidents_unsent": "ncc_incidents_unsent_past_deadline",
    "incidents_late": "ncc_incidents_submitted_late_24h",
    "submissions_unconfirmed": "ncc_submissions_unconfirmed",
    "day_without_call_records": "ncc_report_last_day_without_call_records",
    "run_failed": "ncc_report_last_run_failed",
    "run_not_started": "ncc_report_scheduled_run_not_started",
    "evidence_unarchived": "ncc_evidence_unarchived",
    "backup_overdue": "ncc_backup_overdue",
    # Served by OpenSIPS's dispatcher-sync sidecar: the UDP receive buffer a socket of the pod
    # gets when it asks for OpenSIPS's maxbuffer, and what it asks for.
    "udp_receive_buffer": "acm_opensips_udp_receive_buffer_bytes",
    "udp_receive_buffer_wanted": "acm_opensips_udp_receive_buffer_wanted_bytes",
}
# How old the last accepted submission of each report may be before the run counts as missed:
# one period plus the slack between the job's start and the regulator's deadline.
# Every alert the rules define; each has its runbook, docs/runbooks/<alert>.md.
CALL_PATH_ALERTS = ("AcmCircuitBreakerOpen", "AcmNoHealthyEngine", "AcmNoHealthyOpenSipsBackend",
                    "AcmMediaGatewayFailovers", "AcmHighDetectionLatency", "AcmCallsShed",
                    "AcmUdpReceiveBufferCapped")
COMPLIANCE_ALERTS = ("NccIncidentUnsentPastDeadline", "NccIncidentSubmittedLate",
                     "NccSubmissionUnconfirmed", "NccDayWithoutCallRecords",
                     "NccReportRunFailed", "NccReportRunNotStarted", "NccEvidenceNotArchived",
                     "NccDatabaseBackupOverdue")
PLATFORM_ALERTS = ("Watchdog",)
REPORT_MAX_AGE_SECONDS = {
    "daily": 24 * 3600 + 3600,
    "weekly": 7 * 24 * 3600 + 3600,
    "monthly": 31 * 24 * 3600 + 3 * 3600,
}


# --- settings: acm-platform:monitoring ----------------------------------------------------


# Where upstream's image cannot be pulled (the local stack), Prometheus from Debian.
PROMETHEUS_IMAGE = ImageRecipe("prometheus", "images/prometheus/Dockerfile",
                               ("images/prometheus",))


class PrometheusConfig(Model):
    image: ImageRef
    """Prometheus's image, pinned by tag or digest."""
    image_build: ImageBuild | None = None
    """Build Prometheus's image here (from Debian's package) instead."""
    resources: Resources
    """CPU and memory of the Prometheus pod."""
    storage: Storage
    """Prometheus's volume."""
    scrape_interval_seconds: Annotated[int, Field(ge=5, le=300)] = 15
    """Seconds between scrapes."""
    retention_days: Annotated[int, Field(ge=1, le=400)] = 15
    """Days of metrics Prometheus keeps."""
    detection_latency_alert_ms: Annotated[int, Field(ge=1)] = 200
    """The engines' screening latency (p99, ms) above which `AcmHighDetectionLatency` fires."""


class GrafanaConfig(Model):
    image: ImageRef
    """Grafana's image, pinned by tag or digest."""
    resources: Resources
    """CPU and memory of the Grafana pod."""


class MonitoringConfig(Model):
    prometheus: PrometheusConfig
    """Prometheus: scrapes every part and evaluates the alert rules."""
    alertmanager: AlertmanagerConfig
    """Alertmanager: routes and receivers of every alert."""
    grafana: GrafanaConfig
    """Grafana (with `features.grafana`)."""
    runbook_base_url: WebUrl
    """Where docs/runbooks is published for the people on the receiving end: each rule's runbook_url
    is this, '/', the alert's name and '.md'."""


def missed_run_alert(report: str) -> str:
    return f"NccComplianceRunMissed{report.capitalize()}"


def alert_names() -> list[str]:
    return [*CALL_PATH_ALERTS, *(missed_run_alert(r) for r in REPORT_MAX_AGE_SECONDS),
            *COMPLIANCE_ALERTS, *PLATFORM_ALERTS]


# --- the component ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    name: str
    domain: str
    port: int
    path: str = "/metrics"
    basic_auth: kube.BasicAuth | None = None


CREDENTIALS_DIR = "/etc/prometheus/credentials"
# Prometheus's own account: its web config (every path of :9090, the API and /-/reload
# included, asks for it), and the password its clients (Grafana) read.
PROMETHEUS_CONTROL_SECRET = "prometheus-control"
PROMETHEUS_CONTROL_DIR = "/etc/prometheus/control"
PROMETHEUS_WEB_CONFIG = "web-config.yml"
CONTROL_USER = "acm-control"
GRAFANA_PROMETHEUS_DIR = "/etc/grafana/prometheus"


def credential_file(auth: kube.BasicAuth) -> str:
    return f"{auth.secret}-{auth.key}"


class MonitoringArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    environment: str
    settings: MonitoringConfig
    grafana_enabled: bool
    scrape_targets: list[ScrapeTarget]
    grafana_admin_password: str
    prometheus_control_password: str
    alertmanager_control_password: str
    alertmanager_credentials: str
    """The secret alertmanagerCredentials (JSON), or its offline placeholder."""
    digest_key: str
    """The stack's secretsDigestKey (the web configs' bcrypt salts are keyed with it)."""
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


def rendered_monitoring_files(args: MonitoringArgs, alertmanagers: AlertmanagerEndpoints
                              ) -> tuple[dict[str, str], dict[str, str]]:
    prometheus = args.settings.prometheus
    base = args.settings.runbook_base_url.rstrip("/")
    runbooks = {alert: f"{base}/{alert}.md" for alert in alert_names()}
    scrape_jobs = [
        {"name": t.name, "domain": t.domain, "port": t.port, "path": t.path,
         "basic_auth": None if t.basic_auth is None else {
             "username": t.basic_auth.username,
             "password_file": f"{CREDENTIALS_DIR}/{credential_file(t.basic_auth)}"}}
        for t in args.scrape_targets
    ]
    prometheus_files = {
        "prometheus.yml": render(
            "prometheus.yml.j2", scrape_jobs=scrape_jobs,
            scrape_interval=f"{prometheus.scrape_interval_seconds}s",
            environment=args.environment,
            alertmanagers={"domain": alertmanagers.domain, "port": alertmanagers.port,
                           "username": alertmanagers.account.username,
                           "password_file": f"{CREDENTIALS_DIR}/"
                                            f"{credential_file(alertmanagers.account)}"}),
        "alert-rules.yml": render(
            "alert-rules.yml.j2", metrics=METRICS, runbooks=runbooks,
            detection_latency_ms=prometheus.detection_latency_alert_ms,
            failover_rate_threshold=1,
            compliance_reports=[
                {"name": name, "alert": missed_run_alert(name), "max_age_seconds": age,
                 "runbook_url": runbooks[missed_run_alert(name)]}
                for name, age in REPORT_MAX_AGE_SECONDS.items()
            ],
        ),
    }
    panels = [
        ("Calls per second", f"sum(rate({METRICS['calls_total']}[5m]))"),
        ("Fraud detected per second", f"sum(rate({METRICS['fraud_detected']}[5m]))"),
        ("Unscreened calls per second (breaker open)",
         f"sum(rate({METRICS['unscreened_calls']}[5m]))"),
        ("Circuit breaker open", f"max({METRICS['breaker_open']})"),
        ("Failover events per second", f"sum(rate({METRICS['failover_events']}[5m]))"),
        ("Detection latency P99 (s)",
         f"histogram_quantile(0.99, sum by (le) "
         f"(rate({METRICS['detection_latency_bucket']}[5m])))"),
    ]
    prometheus_url = f"http://{kube.PROMETHEUS.name}.{args.namespace}.svc.cluster.local:" \
                     f"{PROMETHEUS_PORT}"
    grafana_files = {
        "datasources.yml": render("grafana-datasources.yml.j2", prometheus_url=prometheus_url,
                                  username=CONTROL_USER,
                                  password_file=f"{GRAFANA_PROMETHEUS_DIR}/password"),
        "dashboards.yml": render("grafana-dashboards.yml.j2",
                                 dashboards_dir="/var/lib/grafana/dashboards"),
        "call-path.json": render(
            "dashboards/call-path.json.j2", environment=args.environment,
            panels=[
                {"id": index + 1, "title": title, "expr": expr,
                 "x": 12 * (index % 2), "y": 8 * (index // 2)}
                for index, (title, expr) in enumerate(panels)
            ],
        ),
    }
    return prometheus_files, grafana_files


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prometheus = args.settings.prometheus
        self.alertmanager = Alertmanager(
            f"{name}-alertmanager",
            AlertmanagerArgs(images=args.images, namespace=args.namespace,
                             instance=args.instance, settings=args.settings.alertmanager,
                             control_password=args.alertmanager_control_password,
                             credentials=args.alertmanager_credentials,
                             digest_key=args.digest_key,
                             priority_class=args.priority_class,
                             node_topology_key=args.node_topology_key,
                             zone_topology_key=args.zone_topology_key),
            child)
        alertmanagers = self.alertmanager.endpoints
        prometheus_files, grafana_files = rendered_monitoring_files(args, alertmanagers)
        self.prometheus_config = kube.RenderedConfig(
            f"{name}-prometheus-config", "prometheus-config", args.namespace,
            kube.PROMETHEUS.labels(args.instance), prometheus_files, child,
        )
        self.prometheus_control = k8s.core.v1.Secret(
            f"{name}-prometheus-control",
            metadata=kube.metadata(PROMETHEUS_CONTROL_SECRET, args.namespace,
                                   kube.PROMETHEUS.labels(args.instance)),
            type="Opaque",
            string_data={
                PROMETHEUS_WEB_CONFIG: pulumi.Output.secret(web_config(
                    CONTROL_USER, args.prometheus_control_password, args.digest_key,
                    "prometheus-web")),
                "password": pulumi.Output.secret(args.prometheus_control_password)},
            opts=child,
        )
        prometheus_spec = StatefulTierSpec(
            part=kube.PROMETHEUS, namespace=args.namespace, instance=args.instance,
            image=args.images.image(PROMETHEUS_IMAGE, prometheus.image, prometheus.image_build),
            replicas=1, resources=prometheus.resources,
            storage=prometheus.storage, ports={"http": PROMETHEUS_PORT},
            data_path="/prometheus",
            args=["--config.file=/etc/prometheus/prometheus.yml",
                  "--storage.tsdb.path=/prometheus",
                  f"--storage.tsdb.retention.time={prometheus.retention_days}d",
                  f"--web.config.file={PROMETHEUS_CONTROL_DIR}/{PROMETHEUS_WEB_CONFIG}",
                  "--web.enable-lifecycle"],
            # Every path of the web port asks for the account, the health pages too: the
            # kubelet checks that the port answers.
            liveness=kube.tcp_probe("http"),
            readiness=kube.tcp_probe("http", period=5),
            priority_class=args.priority_class, node_topology_key=args.node_topology_key,
            zone_topology_key=args.zone_topology_key,
            config_volume=("config", self.prometheus_config.name, "/etc/prometheus"),
            secret_volume=("control", PROMETHEUS_CONTROL_SECRET, PROMETHEUS_CONTROL_DIR),
            extra_annotations={kube.CONFIG_HASH_ANNOTATION: self.prometheus_config.hash},
            credential_files=(CREDENTIALS_DIR, sorted(
                {(a.secret, a.key, credential_file(a))
                 for a in [alertmanagers.account,
                           *(t.basic_auth for t in args.scrape_targets if t.basic_auth)]})),
        )
        self.prometheus = stateful_tier(f"{name}-prometheus", prometheus_spec, self)
        service(f"{name}-prometheus-service", kube.PROMETHEUS.name, kube.PROMETHEUS,
                args.namespace, args.instance,
                [{"name": "http", "port": PROMETHEUS_PORT, "target_port": "http"}], self,
                type="ClusterIP")
        self.grafana: Any = None
        if args.grafana_enabled:
            self._grafana(name, args, grafana_files)
        self.register_outputs({"prometheusConfigHash": self.prometheus_config.hash})

    def _grafana(self, name: str, args: MonitoringArgs, files: dict[str, str]) -> None:
        child = pulumi.ResourceOptions(parent=self)
        labels = kube.GRAFANA.labels(args.instance)
        grafana = args.settings.grafana
        self.grafana_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=kube.metadata("grafana-admin", args.namespace, labels),
            type="Opaque",
            string_data={"admin-user": "admin",
                         "admin-password": pulumi.Output.secret(args.grafana_admin_password)},
            opts=child,
        )
        provisioning = {key: files[key] for key in ("datasources.yml", "dashboards.yml")}
        self.grafana_provisioning = kube.RenderedConfig(
            f"{name}-grafana-provisioning", "grafana-provisioning", args.namespace, labels,
            provisioning, child,
        )
        self.grafana_dashboards = kube.RenderedConfig(
            f"{name}-grafana-dashboards", "grafana-dashboards", args.namespace, labels,
            {"call-path.json": files["call-path.json"]}, child,
        )
        container = {
            "name": "grafana",
            "image": grafana.image,
            "ports": [{"name": "http", "container_port": GRAFANA_PORT, "protocol": "TCP"}],
            "env": [
                # Credentials as files from the Secret, not environment variables (which
                # leak into process listings, crash dumps and `kubectl describe`).
                {"name": "GF_SECURITY_ADMIN_USER__FILE",
                 "value": f"{GRAFANA_ADMIN_DIR}/admin-user"},
                {"name": "GF_SECURITY_ADMIN_PASSWORD__FILE",
                 "value": f"{GRAFANA_ADMIN_DIR}/admin-password"},
                {"name": "GF_PATHS_PROVISIONING", "value": "/etc/grafana/provisioning"},
                {"name": "GF_ANALYTICS_REPORTING_ENABLED", "value": "false"},
                {"name": "GF_ANALYTICS_CHECK_FOR_UPDATES", "value": "false"},
            ],
            "resources": kube.resources(grafana.resources),
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/api/health", "http"),
            "readiness_probe": kube.http_probe("/api/health", "http", period=5),
            "volume_mounts": [
                {"name": "datasources", "mount_path": "/etc/grafana/provisioning/datasources",
                 "read_only": True},
                {"name": "dashboard-providers",
                 "mount_path": "/etc/grafana/provisioning/dashboards", "read_only": True},
                {"name": "dashboards", "mount_path": "/var/lib/grafana/dashboards",
                 "read_only": True},
                {"name": "data", "mount_path": "/var/lib/grafana"},
                {"name": "tmp", "mount_path": "/tmp"},
                {"name": "admin", "mount_path": GRAFANA_ADMIN_DIR, "read_only": True},
                {"name": "prometheus-account", "mount_path": GRAFANA_PROMETHEUS_DIR,
                 "read_only": True},
            ],
        }
        spec = DeploymentSpec(
            part=kube.GRAFANA, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            # The platform's high UID, not the image's 472 (a low UID can collide with a
            # host account); the volumes are writable through fsGroup.
            replicas=1, uid=kube.DEFAULT_UID,
            volumes=[
                {"name": "datasources", "config_map": {
                    "name": self.grafana_provisioning.name,
                    "items": [{"key": "datasources.yml", "path": "datasources.yml"}]}},
                {"name": "dashboard-providers", "config_map": {
                    "name": self.grafana_provisioning.name,
                    "items": [{"key": "dashboards.yml", "path": "dashboards.yml"}]}},
                {"name": "dashboards", "config_map": {"name": self.grafana_dashboards.name}},
                {"name": "data", "empty_dir": {"size_limit": "1Gi"}},
                {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
                {"name": "admin", "secret": {"secret_name": "grafana-admin",
                                             "default_mode": 0o440}},
                {"name": "prometheus-account", "secret": {
                    "secret_name": PROMETHEUS_CONTROL_SECRET, "default_mode": 0o440,
                    "items": [{"key": "password", "path": "password"}]}},
            ],
            config_hash=kube.content_hash({"provisioning": self.grafana_provisioning.hash,
                                           "dashboards": self.grafana_dashboards.hash}),
            # Grafana reads its admin account and Prometheus's password when it provisions.
            secrets_digest=secrets_digest(args.digest_key, {
                "grafana-admin/admin-password": args.grafana_admin_password,
                f"{PROMETHEUS_CONTROL_SECRET}/password": args.prometheus_control_password}),
        )
        self.grafana = managed_deployment(
            f"{name}-grafana", spec, self,
            depends_on=[self.grafana_secret, self.grafana_provisioning.config_map,
                        self.grafana_dashboards.config_map],
        )
        service(f"{name}-grafana-service", kube.GRAFANA.name, kube.GRAFANA, args.namespace,
                args.instance, [{"name": "http", "port": GRAFANA_PORT, "target_port": "http"}],
                self, type="ClusterIP")
