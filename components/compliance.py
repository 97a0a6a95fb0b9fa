"""ComplianceJobs: the CronJobs that meet the NCC calendar, and the audit exporter that pages
when they do not.

Every schedule runs in Africa/Lagos time (the regulator's calendar), never two runs of a report
at once (the job serializes per period too, but Forbid keeps a slow run from being joined by
the next), and with deadlines the stack config has checked against the regulator's due times:
a run that cannot finish in time is killed and fails visibly instead of submitting late.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from components.base import kube
from components.base.images import JOB_IMAGE, ImageSource
from components.base.settings import (
    AbsolutePath,
    CronSchedule,
    Host,
    HttpsUrl,
    ImageBuild,
    ImageRef,
    IsoDay,
    LicenseNumber,
    Model,
    Network,
    Port,
    Resources,
    SftpUser,
    StorageQuantity,
    cron_fields,
    described,
)
from components.base.workload import DeploymentSpec, managed_deployment, service
from jobs import periods
from jobs import settings as job_settings

SECRET_NAME = "ncc-compliance-credentials"
# The evidence store's CA certificate, a file of the jobs' Secret (not secret, but with the
# keys it belongs to).
EVIDENCE_CA_FILE = "evidence-ca.pem"
SECRETS_MOUNT = "/var/run/secrets/ncc"
# The exporter's own account (what Prometheus scrapes with), apart from the jobs' credentials.
EXPORTER_SECRET = "ncc-compliance-exporter-control"
EXPORTER_SECRET_MOUNT = "/var/run/secrets/ncc-exporter"
EXPORTER_USER = "acm-control"
SCRATCH_MOUNT = "/scratch"
EXPORTER_PORT = 9469
LAGOS = "Africa/Lagos"
# The Secret's keys are the file names the job reads, each filled from a stack secret.
SECRET_FILES = {
    job_settings.DATABASE_PASSWORD: "database_password",
    job_settings.ATRS_CLIENT_ID: "ncc_atrs_client_id",
    job_settings.ATRS_CLIENT_SECRET: "ncc_atrs_client_secret",
    job_settings.SFTP_PRIVATE_KEY: "ncc_sftp_private_key",
    job_settings.SFTP_KNOWN_HOSTS: "ncc_sftp_known_hosts",
}


# --- settings: acm-platform:compliance ----------------------------------------------------


class ReportSchedule(Model):
    schedule: CronSchedule
    """When the CronJob runs (cron syntax, Africa/Lagos time)."""
    starting_deadline_seconds: Annotated[int, Field(ge=10)]
    """Seconds after its time a missed run may still start."""
    active_deadline_seconds: Annotated[int, Field(ge=60)]
    """Seconds a run may take before Kubernetes stops it."""


# When the regulator must have each report, in minutes after WAT midnight of the run's day, and
# an incident, in seconds after detection: the job's own calendar (jobs/periods.py).
REPORT_DUE_MINUTES = {report: int(after.total_seconds()) // 60
                      for report, after in periods.DUE_AFTER_MIDNIGHT.items()}
INCIDENT_DUE_SECONDS = int(periods.INCIDENT_DEADLINE.total_seconds())


class ComplianceReports(Model):
    daily: ReportSchedule
    """The daily package (due 06:00 WAT for the day before)."""
    weekly: ReportSchedule
    """The weekly package."""
    monthly: ReportSchedule
    """The monthly package and its PDF."""
    incidents: ReportSchedule
    """The incident feed (each incident within its deadline)."""

    def by_command(self) -> dict[str, ReportSchedule]:
        """Each CronJob's schedule, by the ncc-report command it runs."""
        return {"daily": self.daily, "weekly": self.weekly, "monthly": self.monthly,
                "incidents": self.incidents}

    @model_validator(mode="after")
    def _deadlines_end_before_the_regulators(self) -> Self:
        """A run that starts as late as Kubernetes allows and runs as long as it may must
        still end by the regulator's deadline; otherwise it is killed in time to page."""
        problems = []
        for report, due in REPORT_DUE_MINUTES.items():
            schedule: ReportSchedule = getattr(self, report)
            minutes, hours = cron_fields(schedule.schedule)[:2]
            if len(minutes) != 1 or len(hours) != 1:
                problems.append(f"{report}.schedule {schedule.schedule!r} must run once a day "
                                "at a fixed time")
                continue
            start = next(iter(hours)) * 60 + next(iter(minutes))
            latest_end = start * 60 + schedule.starting_deadline_seconds \
                + schedule.active_deadline_seconds
            if latest_end > due * 60:
                problems.append(
                    f"{report}: a run starting at {start // 60:02d}:{start % 60:02d} WAT "
                    f"+ startingDeadlineSeconds {schedule.starting_deadline_seconds} "
                    f"+ activeDeadlineSeconds {schedule.active_deadline_seconds} can end after "
                    f"the regulator's {due // 60:02d}:{due % 60:02d} deadline")
        incidents = self.incidents
        if incidents.starting_deadline_seconds + incidents.active_deadline_seconds \
                >= INCIDENT_DUE_SECONDS:
            problems.append("incidents: startingDeadlineSeconds + activeDeadlineSeconds must "
                            "stay under the 1-hour incident deadline")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# The regulator keeps seven years; 2557 days hold seven years whatever their leap days.
SEVEN_YEARS_DAYS = 2557
S3Bucket = Annotated[str, AfterValidator(described(
    r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
    "is not an S3 bucket name: 3 to 63 lowercase letters, digits, dots or hyphens"))]
AgeRecipient = Annotated[str, AfterValidator(described(
    r"age1[02-9ac-hj-np-z]{58}", "is not an age recipient (what `age-keygen -y` prints)"))]


class EvidenceStore(Model):
    """The S3-compatible store for the evidence archive and the database backups (the
    operator's; in `local` the object store stand-in). Its keys are the secrets
    evidenceStoreAccessKeyId and evidenceStoreSecretAccessKey."""

    endpoint: HttpsUrl
    """The S3 endpoint (HTTPS, verified)."""
    bucket: S3Bucket
    """The bucket, created with Object Lock (prod refuses one that does not lock)."""
    region: str = "us-east-1"
    """The S3 region."""
    ca_certificate: str | None = None
    """A CA certificate (PEM) for the store's TLS; unset: the image's trust store."""
    retention_days: Annotated[int, Field(ge=1, le=36500)] = SEVEN_YEARS_DAYS
    """How long each archived object is locked after the regulator accepted it."""
    create_bucket: bool = False
    """Only for a store the project runs itself (local): the job makes the bucket, with Object Lock,
    where it is missing."""
    egress_cidrs: Annotated[list[Network], Field(default_factory=list)]
    """Where the store is, outside the cluster: the jobs' only egress besides the regulator's."""


class DatabaseBackup(Model):
    """The ncc-database-backup CronJob: pg_dump, encrypted with age to `recipient` (the
    identity that decrypts it is the secret backupIdentity, kept outside the cluster)."""

    schedule: CronSchedule = "15 2 * * *"
    """When the backup CronJob runs (cron syntax, Africa/Lagos time)."""
    starting_deadline_seconds: Annotated[int, Field(ge=10)] = 600
    """Seconds after its time a missed backup may still start."""
    active_deadline_seconds: Annotated[int, Field(ge=60)] = 3600
    """Seconds a backup may take before Kubernetes stops it."""
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 35
    """Days each backup is kept (locked) before it is pruned."""
    recipient: AgeRecipient
    """The age recipient (`age1...`) backups are encrypted to; its identity stays outside the
    cluster."""


class ComplianceConfig(Model):
    image: ImageRef
    """Deployed as is unless imageBuild is set; then built from jobs/Dockerfile and pushed."""
    image_build: ImageBuild | None = None
    """Build the job image (`jobs/Dockerfile`) here and push it to this registry."""
    resources: Resources
    """CPU and memory of each report Job's pod."""
    license_number: LicenseNumber
    """The operator's NCC licence number, as the regulator writes it in file names."""
    ncc_environment: Literal["sandbox", "production"]
    """The regulator's `sandbox` or `production` (prod must use production)."""
    first_data_date: IsoDay
    """The first WAT day the platform holds call records for under this licence: no period that ends
    before it is ever filed (an accepted all-zero report cannot be corrected)."""
    ncc_egress_cidrs: Annotated[list[Network], Field(min_length=1)]
    """Regulator endpoints, for the job's NetworkPolicy egress."""
    sftp_host: Host
    """The regulator's SFTP server (its host key pinned by `nccSftpKnownHosts`)."""
    sftp_port: Port = 22
    """The SFTP server's port."""
    sftp_user: SftpUser = "acm"
    """The SFTP user the regulator gave the operator."""
    sftp_directory: AbsolutePath = "/incoming"
    """The regulator's upload folder."""
    atrs_base_url: HttpsUrl
    """The ATRS API's base URL (HTTPS, verified)."""
    atrs_idempotency_key_honoured: bool = True
    """Confirmed with the regulator at onboarding: it answers a repeated Idempotency-Key with the
    original result. false: a POST that got no answer is not resent; it waits for a person
    (ncc-report resolve) and NccSubmissionUnconfirmed fires."""
    dry_run: bool = False
    """Generate and check the packages but send nothing (never in prod)."""
    reports: ComplianceReports
    """The schedule and deadlines of each report's CronJob (Africa/Lagos time)."""
    scratch_size: StorageQuantity = "1Gi"
    """The size of each Job's scratch volume, where packages are built."""
    history_limit: Annotated[int, Field(ge=1, le=30)] = 7
    """Finished Jobs kept per CronJob, for their logs."""
    evidence_store: EvidenceStore | None = None
    """The S3 store that keeps every accepted submission under Object Lock; required in prod."""
    backup: DatabaseBackup | None = None
    """Database backups (`ncc-report backup`) into the evidence store; required in prod."""

    @model_validator(mode="after")
    def _evidence_kept_where_it_counts(self) -> Self:
        """Jobs that send for real archive what the regulator accepts and back the database
        up; in production for the regulator's seven years at least."""
        problems = []
        if not self.dry_run:
            if self.evidence_store is None:
                problems.append("evidenceStore is required when the jobs send (dryRun false): "
                                "every accepted submission is archived write-once")
            if self.backup is None:
                problems.append("backup is required when the jobs send (dryRun false): the "
                                "audit trail must survive its database")
        if self.backup is not None and self.evidence_store is None:
            problems.append("backup needs evidenceStore: the backups go to that store")
        if self.ncc_environment == "production" and self.evidence_store is not None:
            if self.evidence_store.retention_days < SEVEN_YEARS_DAYS:
                problems.append(f"evidenceStore.retentionDays {self.evidence_store.retention_days}"
                                f" is below the regulator's seven years ({SEVEN_YEARS_DAYS} days)")
            if self.evidence_store.create_bucket:
                problems.append("evidenceStore.createBucket: the production bucket is the "
                                "operator's, made with Object Lock, never by the jobs")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# --- the component ------------------------------------------------------------------------


class ComplianceJobsArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    settings: ComplianceConfig
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    database_host: str
    database_port: int
    secrets: dict[str, str]
    """Secret values by SecretSettings field name; only ever placed in a Kubernetes Secret."""
    evidence_ca_certificate: str | None = None
    """The evidence store's CA (the local stand-in's, or evidenceStore.caCertificate)."""


class ComplianceJobs(pulumi.ComponentResource):
    def __init__(self, name: str, args: ComplianceJobsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:ComplianceJobs", name, None, opts)
        settings = args.settings
        labels = kube.COMPLIANCE.labels(args.instance)
        self.secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=kube.metadata(SECRET_NAME, args.namespace, labels),
            type="Opaque",
            string_data={key: pulumi.Output.secret(value)
                         for key, value in self._secret_files(args).items()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.exporter_secret = k8s.core.v1.Secret(
            f"{name}-exporter-control",
            metadata=kube.metadata(EXPORTER_SECRET, args.namespace,
                                   kube.COMPLIANCE_EXPORTER.labels(args.instance)),
            type="Opaque",
            string_data={"password": pulumi.Output.secret(
                args.secrets["compliance_exporter_password"])},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.exporter_account = kube.BasicAuth(EXPORTER_USER, EXPORTER_SECRET)
        self.cron_jobs = {
            report: self._cron_job(name, report, schedule, args)
            for report, schedule in self._scheduled(settings).items()
        }
        exporter = managed_deployment(
            f"{name}-exporter",
            DeploymentSpec(
                part=kube.COMPLIANCE_EXPORTER, namespace=args.namespace, instance=args.instance,
                containers=[self._container(args, ["exporter", "--port", str(EXPORTER_PORT)],
                                            exporter=True)],
                priority_class=args.priority_class, node_topology_key=args.node_topology_key,
                zone_topology_key=args.zone_topology_key, replicas=1,
                volumes=[*self._volumes(args),
                         {"name": "exporter-account", "secret": {
                             "secret_name": EXPORTER_SECRET, "default_mode": 0o440}}],
                uid=kube.DEFAULT_UID,
            ),
            self, depends_on=[self.secret, self.exporter_secret],
        )
        self.exporter = exporter.deployment
        self.exporter_service = service(
            f"{name}-exporter-service", kube.COMPLIANCE_EXPORTER.name, kube.COMPLIANCE_EXPORTER,
            args.namespace, args.instance,
            [{"name": "metrics", "port": EXPORTER_PORT, "target_port": "metrics"}], self,
            cluster_ip="None",  # Prometheus resolves pod addresses (dns_sd_configs)
        )
        self.exporter_domain = (f"{kube.COMPLIANCE_EXPORTER.name}.{args.namespace}"
                                ".svc.cluster.local")
        self.register_outputs({"cronJobs": sorted(self.cron_jobs),
                               "exporterDomain": self.exporter_domain})

    @staticmethod
    def _environment(args: ComplianceJobsArgs) -> list[dict[str, str]]:
        settings = args.settings
        values = {
            "NCC_LICENSE_NUMBER": settings.license_number,
            "NCC_ENVIRONMENT": settings.ncc_environment,
            "NCC_FIRST_DATA_DATE": settings.first_data_date.isoformat(),
            "NCC_DB_HOST": args.database_host,
            "NCC_DB_PORT": str(args.database_port),
            "NCC_DB_NAME": "acm",
            "NCC_DB_USER": "acm",
            "NCC_SFTP_HOST": settings.sftp_host,
            "NCC_SFTP_PORT": str(settings.sftp_port),
            "NCC_SFTP_USER": settings.sftp_user,
            "NCC_SFTP_DIRECTORY": settings.sftp_directory,
            "NCC_ATRS_BASE_URL": settings.atrs_base_url,
            "NCC_SECRETS_DIR": SECRETS_MOUNT,
            "NCC_OUT_DIR": SCRATCH_MOUNT,
            "NCC_DRY_RUN": "true" if settings.dry_run else "false",
            "NCC_ATRS_IDEMPOTENCY_KEY_HONOURED":
                "true" if settings.atrs_idempotency_key_honoured else "false",
        }
        store = settings.evidence_store
        if store is not None:
            values |= {
                "NCC_EVIDENCE_ENDPOINT": store.endpoint, "NCC_EVIDENCE_BUCKET": store.bucket,
                "NCC_EVIDENCE_REGION": store.region,
                "NCC_EVIDENCE_RETENTION_DAYS": str(store.retention_days),
                "NCC_EVIDENCE_CREATE_BUCKET": "true" if store.create_bucket else "false",
            }
            if args.evidence_ca_certificate is not None:
                values["NCC_EVIDENCE_CA_FILE"] = f"{SECRETS_MOUNT}/{EVIDENCE_CA_FILE}"
        if settings.backup is not None:
            values |= {"NCC_BACKUP_RECIPIENT": settings.backup.recipient,
                       "NCC_BACKUP_KEEP_DAYS": str(settings.backup.keep_days)}
        return [{"name": key, "value": value} for key, value in values.items()]

    @staticmethod
    def _volumes(args: ComplianceJobsArgs) -> list[dict[str, Any]]:
        return [
            # Owner-read-only files; fsGroup gives the non-root user access.
            {"name": "credentials", "secret": {"secret_name": SECRET_NAME, "default_mode": 0o440}},
            {"name": "scratch", "empty_dir": {"size_limit": args.settings.scratch_size}},
        ]

    def _container(self, args: ComplianceJobsArgs, arguments: list[str],
                   exporter: bool = False) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "ncc-report",
            "image": args.images.image(JOB_IMAGE, args.settings.image,
                                       args.settings.image_build),
            "args": arguments,
            "env": self._environment(args),
            "resources": kube.resources(args.settings.resources),
            # Read-only root: packages go to the scratch volume, nothing else is written.
            "security_context": kube.container_security(),
            "volume_mounts": [
                {"name": "credentials", "mount_path": SECRETS_MOUNT, "read_only": True},
                {"name": "scratch", "mount_path": SCRATCH_MOUNT},
            ],
        }
        if exporter:
            # When each CronJob must have started, and how long a run may take: the exporter
            # pages for a run that failed or never started (jobs/runs.py).
            container["env"].append({"name": f"{job_settings.ENV_PREFIX}SCHEDULES",
                                     "value": json.dumps(self._schedules(args), sort_keys=True)})
            container["env"].append({"name": f"{job_settings.ENV_PREFIX}EXPORTER_PASSWORD_FILE",
                                     "value": f"{EXPORTER_SECRET_MOUNT}/password"})
            container["volume_mounts"].append({"name": "exporter-account",
                                               "mount_path": EXPORTER_SECRET_MOUNT,
                                               "read_only": True})
            container["ports"] = [{"name": "metrics", "container_port": EXPORTER_PORT}]
            # /metrics asks for the account: the kubelet checks that the port answers.
            container["readiness_probe"] = kube.tcp_probe("metrics")
            container["liveness_probe"] = kube.tcp_probe("metrics", failures=6)
        return container

    @staticmethod
    def _scheduled(settings: ComplianceConfig) -> dict[str, ReportSchedule | DatabaseBackup]:
        """Each CronJob's schedule by the ncc-report command it runs: the reports and, where
        the stack backs its database up, `backup`."""
        schedules: dict[str, ReportSchedule | DatabaseBackup] = dict(
            settings.reports.by_command())
        if settings.backup is not None:
            schedules["backup"] = settings.backup
        return schedules

    def _schedules(self, args: ComplianceJobsArgs) -> dict[str, dict[str, Any]]:
        return {command: {"schedule": schedule.schedule,
                          "starting_deadline_seconds": schedule.starting_deadline_seconds,
                          "active_deadline_seconds": schedule.active_deadline_seconds}
                for command, schedule in self._scheduled(args.settings).items()}

    @staticmethod
    def _secret_files(args: ComplianceJobsArgs) -> dict[str, str]:
        """The jobs' Secret: the files the job reads (jobs/settings.py names them)."""
        files = {key: args.secrets[field] for key, field in SECRET_FILES.items()}
        if args.settings.evidence_store is not None:
            files[job_settings.EVIDENCE_ACCESS_KEY_ID] = args.secrets[
                "evidence_store_access_key_id"]
            files[job_settings.EVIDENCE_SECRET_ACCESS_KEY] = args.secrets[
                "evidence_store_secret_access_key"]
        if args.evidence_ca_certificate is not None:
            files[EVIDENCE_CA_FILE] = args.evidence_ca_certificate
        return files

    def _cron_job(self, name: str, report: str, schedule: ReportSchedule | DatabaseBackup,
                  args: ComplianceJobsArgs) -> k8s.batch.v1.CronJob:
        labels = {**kube.COMPLIANCE.labels(args.instance), kube.ROLE_LABEL: report}
        history = args.settings.history_limit
        return k8s.batch.v1.CronJob(
            f"{name}-{report}",
            metadata=kube.metadata(f"ncc-report-{report}", args.namespace, labels),
            spec={
                "schedule": schedule.schedule,
                "time_zone": LAGOS,
                "concurrency_policy": "Forbid",
                "starting_deadline_seconds": schedule.starting_deadline_seconds,
                "successful_jobs_history_limit": history,
                "failed_jobs_history_limit": history,
                "job_template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "active_deadline_seconds": schedule.active_deadline_seconds,
                        # A retry resumes from the audit trail (never a second submission),
                        # so Kubernetes may retry a crashed run within the deadline.
                        "backoff_limit": 3,
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "restart_policy": "Never",
                                "service_account_name": kube.COMPLIANCE.name,
                                "automount_service_account_token": False,
                                "priority_class_name": args.priority_class,
                                "security_context": kube.pod_security(),
                                "containers": [self._container(args, [report])],
                                "volumes": self._volumes(args),
                            },
                        },
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.secret]),
        )
