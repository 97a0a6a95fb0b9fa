"""`acmctl restore-database STACK --backup KEY`: a database backup back into a stack's report
database, in one command.

The backups are encrypted to the stack's age recipient; the identity that decrypts them is the
Pulumi secret `backupIdentity`, which never stays in the cluster. The command reads it with the
pinned CLI (`scripts/pulumi config get`), puts it in a Secret for this run only, runs the
backup CronJob's own template as a Job with `ncc-report restore --backup KEY
--identity-file ...` (the job image, its settings and account), prints the Job's log, and
removes the Job and the Secret whatever happened. Without --backup it lists the backups.
"""

from __future__ import annotations

import base64
import copy
import subprocess
import time
import uuid
from pathlib import Path

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from stacks.config import PROJECT
from stacks.pod_logs import pod_log
from stacks.stack_files import read_stack_file

REPOSITORY = Path(__file__).resolve().parents[1]
BACKUP_CRON_JOB = "ncc-report-backup"
IDENTITY_MOUNT = "/var/run/secrets/ncc-restore"


class RestoreError(Exception):
    """The restore could not run, or failed; the message says where."""


def stack_identity(stack: str) -> str:
    """The decrypted secret backupIdentity, through the pinned CLI."""
    answer = subprocess.run([str(REPOSITORY / "scripts" / "pulumi"), "config", "get", "--stack",
                             stack, f"{PROJECT}:backupIdentity"], capture_output=True,
                            text=True, check=False, cwd=REPOSITORY)
    if answer.returncode != 0 or not answer.stdout.strip():
        raise RestoreError(f"{PROJECT}:backupIdentity of stack {stack!r} could not be read "
                           f"({answer.stderr.strip() or 'empty'})")
    return answer.stdout.strip() + "\n"


def _api(stack: str) -> tuple[kube_client.ApiClient, str]:
    values, _ = read_stack_file(stack)
    context = (values.get("kubernetes") or {}).get("context")
    api = kube_config.new_client_from_config(context=context)
    return api, str(values["namespace"])


def restore_job(template: kube_client.V1CronJob, name: str, secret: str,
                arguments: list[str]) -> kube_client.V1Job:
    """The CronJob's template as a Job running `arguments`, with the identity's Secret mounted;
    no retry (a restore is run again by a person, knowingly)."""
    spec = copy.deepcopy(template.spec.job_template.spec)
    spec.backoff_limit = 0
    pod = spec.template.spec
    pod.volumes = [*(pod.volumes or []), kube_client.V1Volume(
        name="restore-identity",
        secret=kube_client.V1SecretVolumeSource(secret_name=secret, default_mode=0o400))]
    container = pod.containers[0]
    container.args = arguments
    container.volume_mounts = [*(container.volume_mounts or []), kube_client.V1VolumeMount(
        name="restore-identity", mount_path=IDENTITY_MOUNT, read_only=True)]
    return kube_client.V1Job(
        metadata=kube_client.V1ObjectMeta(
            name=name, namespace=template.metadata.namespace,
            labels=dict(spec.template.metadata.labels or {}),
            owner_references=[kube_client.V1OwnerReference(
                api_version="batch/v1", kind="CronJob", name=template.metadata.name,
                uid=template.metadata.uid, controller=True)]),
        spec=spec)


def run_in_cluster(stack: str, arguments: list[str], identity: str | None,
                   timeout: float = 3600) -> tuple[bool, str]:
    """Run `ncc-report ARGUMENTS` from the backup CronJob's template; (succeeded, its log)."""
    api, namespace = _api(stack)
    core, batch = kube_client.CoreV1Api(api), kube_client.BatchV1Api(api)
    try:
        template = batch.read_namespaced_cron_job(BACKUP_CRON_JOB, namespace)
    except ApiException as error:
        raise RestoreError(f"stack {stack!r} has no {BACKUP_CRON_JOB} CronJob in {namespace} "
                           f"({error.reason}): is compliance.backup set and deployed?") from None
    name = f"ncc-restore-{uuid.uuid4().hex[:8]}"
    if identity is not None:
        core.create_namespaced_secret(namespace, kube_client.V1Secret(
            metadata=kube_client.V1ObjectMeta(name=name, namespace=namespace),
            data={"identity": base64.b64encode(identity.encode()).decode()}))
    try:
        batch.create_namespaced_job(namespace, restore_job(template, name, name, arguments))
        deadline = time.monotonic() + timeout
        ended = None
        while ended is None:
            status = batch.read_namespaced_job(name, namespace).status
            ended = next((c.type for c in status.conditions or []
                          if c.status == "True" and c.type in ("Complete", "Failed")), None)
            if ended is None and time.monotonic() > deadline:
                ended = "TimedOut"
            time.sleep(1)
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        log = "".join(pod_log(core, p.metadata.name, namespace) for p in pods)
        return ended == "Complete", log
    finally:
        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        if identity is not None:
            core.delete_namespaced_secret(name, namespace)


def restore_database(stack: str, backup: str | None) -> tuple[bool, str]:
    if backup is None:
        return run_in_cluster(stack, ["backups"], None)
    return run_in_cluster(stack, ["restore", "--backup", backup, "--identity-file",
                                  f"{IDENTITY_MOUNT}/identity"], stack_identity(stack))
