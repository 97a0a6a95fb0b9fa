"""Prometheus exporter of the audit trail: when each report was last accepted.

The alert rules (templates/alert-rules.yml.j2) fire when
`ncc_report_last_accepted_timestamp_seconds` grows older than a period plus its slack, or
is absent: a missed submission pages someone before the regulator notices.
Values are read from the database on every scrape.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs import audit
from jobs.database import apply_schema, connect
from jobs.periods import REPORTS
from jobs.settings import JobSettings

log = logging.getLogger(__name__)
LAST_ACCEPTED = "ncc_report_last_accepted_timestamp_seconds"


class AuditCollector(Collector):
    def __init__(self, settings: JobSettings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(LAST_ACCEPTED, "Unix time of the last submission the "
                                 "regulator accepted, per report", labels=["report"])
        up = GaugeMetricFamily("ncc_report_audit_up", "1 when the audit trail could be read")
        try:
            with connect(self._settings) as conn:
                accepted = audit.last_accepted(conn, self._settings.license_number,
                                               self._settings.environment)
        except Exception as error:  # a scrape must answer; `up` carries the failure
            log.error("audit trail unreadable: %s", error)
            up.add_metric([], 0.0)
            yield up
            return
        for report in (*REPORTS, "incident"):
            if report in accepted:
                last.add_metric([report], accepted[report].timestamp())
        up.add_metric([], 1.0)
        yield last
        yield up


def serve(settings: JobSettings, port: int, address: str = "0.0.0.0") -> None:
    with connect(settings) as conn:
        apply_schema(conn)  # so that "never accepted" reads as absent, not as an error
    registry: Any = REGISTRY
    registry.register(AuditCollector(settings))
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("serving audit metrics on %s:%d/metrics", address, port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
