"""Fixtures of the smoke suite: the plan and a testinfra host per role."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testinfra

from tests.smoke.plan import SmokePlan


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per config file, workload, Service and CronJob the plan names."""
    path = metafunc.config.getoption("smoke_plan")
    plan = SmokePlan.load(Path(path)) if path else None
    cluster = plan.cluster if plan else None
    if "config_file" in metafunc.fixturenames:
        files = plan.config_files if plan else []
        metafunc.parametrize("config_file", files,
                             ids=[f"{item.role}:{item.path}" for item in files])
    if "workload" in metafunc.fixturenames:
        workloads = cluster.workloads if cluster else []
        metafunc.parametrize("workload", workloads,
                             ids=[f"{w.kind.lower()}/{w.name}" for w in workloads])
    if "configured_workload" in metafunc.fixturenames:
        # Only workloads that mount a rendered config: the others have nothing to compare.
        configured = [w for w in (cluster.workloads if cluster else [])
                      if w.config_hash is not None]
        metafunc.parametrize("configured_workload", configured,
                             ids=[f"{w.kind.lower()}/{w.name}" for w in configured])
    if "service" in metafunc.fixturenames:
        services = cluster.services if cluster else []
        metafunc.parametrize("service", services, ids=services)
    if "cron_job" in metafunc.fixturenames:
        cron_jobs = cluster.cron_jobs if cluster else []
        metafunc.parametrize("cron_job", cron_jobs, ids=[c.name for c in cron_jobs])


@pytest.fixture(scope="session")
def plan(pytestconfig: pytest.Config) -> SmokePlan:
    path = pytestconfig.getoption("smoke_plan")
    if not path:
        pytest.fail("the smoke suite needs --smoke-plan PLAN.json")
    return SmokePlan.load(Path(path))


@pytest.fixture(scope="session")
def host_of(plan: SmokePlan) -> Callable[[str], Any]:
    hosts: dict[str, Any] = {}

    def get(role: str) -> Any:
        if role not in plan.hosts:
            pytest.fail(f"the plan names no host for {role!r}")
        if role not in hosts:
            hosts[role] = testinfra.get_host(plan.hosts[role])
        return hosts[role]

    return get
