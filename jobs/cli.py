"""`ncc-report`: the program the compliance CronJobs run, and its manual controls.

    ncc-report daily   [--date YYYY-MM-DD] [--dry-run] [--out DIR]
    ncc-report weekly  [--period YYYY-Www]  ...
    ncc-report monthly [--period YYYY-MM]   ...
    ncc-report incidents
    ncc-report status daily --date 2026-11-23 | status incident ALERT_ID [--refresh]
    ncc-report exporter [--port 9469]
    ncc-report migrate

Without a period, a report command covers the last complete period and catches up on earlier
unaccepted ones. Exit status: 0 done (or already accepted), 1 a period failed or was rejected,
2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any, cast

from jobs import audit
from jobs.database import apply_schema, connect
from jobs.periods import REPORTS, Report, parse_period
from jobs.settings import ConfigError, JobSettings, load_settings
from jobs.submit import ReportRun, Transport, scheduled_periods, submit_incidents

log = logging.getLogger("ncc-report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncc-report", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for report in REPORTS:
        command = commands.add_parser(report, help=f"generate and submit the {report} package")
        command.add_argument("--period", "--date", dest="period",
                             help="the period to (re-)run; default: the last complete one "
                                  "and any missed before it")
        command.add_argument("--dry-run", action="store_true",
                             help="generate the package, send nothing, record nothing")
        command.add_argument("--out", type=Path, help="where packages are written "
                                                      "(default NCC_OUT_DIR)")
    commands.add_parser("incidents", help="submit CRITICAL alerts not yet submitted")
    status = commands.add_parser("status", help="the audit trail of a period or an incident")
    status.add_argument("report", choices=[*REPORTS, "incident"])
    status.add_argument("period", nargs="?", help="period, or the alert id of an incident")
    status.add_argument("--period", "--date", dest="period_option")
    status.add_argument("--refresh", action="store_true",
                        help="incident: ask the regulator for its current status")
    exporter = commands.add_parser("exporter", help="serve audit metrics for Prometheus")
    exporter.add_argument("--port", type=int, default=9469)
    commands.add_parser("migrate", help="apply the read contract and audit schema")
    return parser


def main(argv: list[str] | None = None) -> int:
    from jobs import logs

    logs.configure()
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if getattr(args, "out", None):
            settings = settings.model_copy(update={"out_dir": args.out})
        if getattr(args, "dry_run", False):
            settings = settings.model_copy(update={"dry_run": True})
        return _dispatch(args, settings)
    except ConfigError as error:
        log.error("%s", error)
        print(f"ncc-report: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a malformed --period
        print(f"ncc-report: {error}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: JobSettings) -> int:
    if args.command == "exporter":
        from jobs.exporter import serve

        serve(settings, args.port)
        return 0
    now = dt.datetime.now(dt.UTC)
    with connect(settings) as conn:
        apply_schema(conn)
        if args.command == "migrate":
            return 0
        if args.command == "status":
            return _status(conn, settings, args)
        if args.command == "incidents":
            with Transport.from_settings(settings) as transport:
                result = submit_incidents(conn, settings, transport.atrs, now)
            print(f"incidents: {result.submitted} submitted, {result.already} already "
                  f"submitted, {result.failed} failed, {result.late} past the 1-hour deadline")
            return 1 if result.failed else 0
        report = cast(Report, args.command)
        if settings.dry_run:
            run = ReportRun(conn, settings, None)
            return _run_reports(run, report, args.period, now)
        with Transport.from_settings(settings) as transport:
            return _run_reports(ReportRun(conn, settings, transport), report, args.period, now)


def _run_reports(run: ReportRun, report: Report, period: str | None, now: dt.datetime) -> int:
    periods = ([parse_period(report, period)] if period
               else scheduled_periods(run, report, now))
    log.info("%s: %d period(s) to run: %s", report, len(periods),
             ", ".join(p.label for p in periods))
    for each in periods:
        outcome = run.run(each)
        reference = f" (reference {outcome.reference})" if outcome.reference else ""
        print(f"{report} {outcome.label}: {outcome.status}{reference}")
    return 0 if all(outcome.ok for outcome in run.outcomes) else 1


def _status(conn: Any, settings: JobSettings, args: argparse.Namespace) -> int:
    key = args.period or args.period_option
    if not key:
        raise ValueError("status: give the period (or the alert id of an incident)")
    if args.report == "incident":
        record = audit.incident(conn, key, settings.license_number, settings.environment)
        if record and args.refresh:
            with Transport.from_settings(settings) as transport:
                remote = transport.atrs.incident_status(record["incident_id"])
            audit.update_incident_status(conn, key, settings.license_number,
                                         settings.environment, str(remote.get("status")))
            record = audit.incident(conn, key, settings.license_number, settings.environment)
        history = audit.period_history(conn, "incident", key, settings.license_number)
        print(audit.dumps({"incident": record, **history}))
        return 0 if record else 1
    label = parse_period(args.report, key).label
    history = audit.period_history(conn, args.report, label, settings.license_number)
    print(audit.dumps({"report": args.report, "period": label, **history}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
