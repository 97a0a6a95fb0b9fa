"""`ncc-report`: the program the compliance CronJobs run, and its manual controls.

    ncc-report daily   [--date YYYY-MM-DD] [--dry-run] [--out DIR] [--confirm-empty]
    ncc-report weekly  [--period YYYY-Www]  ...
    ncc-report monthly [--period YYYY-MM]   ...
    ncc-report incidents
    ncc-report resolve daily 2026-11-23 | resolve incident ALERT_ID  (--received R | --not-received)
    ncc-report status daily --date 2026-11-23 | status incident ALERT_ID [--refresh]
    ncc-report exporter [--port 9469]
    ncc-report migrate
    ncc-report backup | backups | restore --backup KEY --identity-file FILE

Without a period, a report command covers the last complete period and catches up on earlier
unaccepted ones. A period that has not ended (WAT, on the report database's clock), one that
ends before the licence's first data (NCC_FIRST_DATA_DATE), and one without a single call record
(unless --confirm-empty) are refused before anything is generated or sent.

Exit status: 0 done, already accepted, or another run holds the lock (it does the work);
1 a period failed, was rejected, holds no call record, or waits for `resolve` (an incident
too); 2 bad settings or arguments, or a period that has not ended or ends before the first
data (nothing was done); 3 the report database could not be reached or failed during the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import psycopg

from jobs import audit, clock, runs
from jobs.database import DatabaseUnavailable, LockBusy, apply_schema, connect
from jobs.periods import (
    REPORTS,
    SHAPES,
    Period,
    Report,
    ensure_after_first_data,
    ensure_ended,
    parse_period,
)
from jobs.settings import ConfigError, JobSettings, load_settings
from jobs.submit import ReportRun, Transport, scheduled_periods, submit_incidents

log = logging.getLogger("ncc-report")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


EXIT_STATUS = """exit status:
  0  done, already accepted, or another run holds the lock (it does the work)
  1  a period failed, was rejected, holds no call record, or waits for `resolve`
  2  bad settings or arguments, or a period that has not ended (nothing was done)
  3  the report database could not be reached or failed during the run

Settings come from NCC_* environment variables and the files of the job's Secret
(docs/ncc-compliance.md, "Running")."""

EXAMPLES = {
    "daily": "ncc-report daily --date 2026-11-23 --dry-run --out /tmp/ncc",
    "weekly": "ncc-report weekly --period 2026-W47",
    "monthly": "ncc-report monthly --period 2026-11",
    "incidents": "ncc-report incidents",
    "resolve": "ncc-report resolve daily 2026-11-23 --received NCC-REF-0042",
    "status": "ncc-report status daily --date 2026-11-23",
    "exporter": "ncc-report exporter --port 9469",
    "migrate": "ncc-report migrate",
    "backup": "ncc-report backup",
    "backups": "ncc-report backups",
    "restore": "ncc-report restore --backup backups/NCC-ACM-0042/acm/20261207T011500Z.dump.age"
               " --identity-file ~/backup-identity.txt",
}


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose help says what it does, its exit status and an example."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"{EXIT_STATUS}\n\nexample:\n  {EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncc-report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  " + EXAMPLES["daily"])
    commands = parser.add_subparsers(dest="command", required=True)
    for report in REPORTS:
        command = _command(commands, report, f"generate and submit the {report} package")
        _period_options(command, f"the period to (re-)run ({SHAPES[report]}); default: the "
                                 "last complete one and any missed before it")
        command.add_argument("--confirm-empty", action="store_true",
                             help="file the period even though it holds no call record at all "
                                  "(only when the platform truly carried no call)")
        command.add_argument("--dry-run", action="store_true",
                             help="generate the package, send nothing, record nothing")
        command.add_argument("--out", type=Path, help="where packages are written "
                                                      "(default NCC_OUT_DIR)")
    _command(commands, "incidents", "submit CRITICAL alerts not yet submitted")
    resolve = _command(
        commands, "resolve", "record what the regulator said about a submission whose POST got no "
                        "answer (NCC_ATRS_IDEMPOTENCY_KEY_HONOURED=false)")
    resolve.add_argument("report", choices=[*REPORTS, "incident"])
    resolve.add_argument("period", help="the period, or the alert id of an incident")
    answer = resolve.add_mutually_exclusive_group(required=True)
    answer.add_argument("--received", metavar="REFERENCE",
                        help="the regulator holds it, under this reference")
    answer.add_argument("--not-received", action="store_true",
                        help="the regulator does not hold it: the next run resends it")
    status = _command(commands, "status", "print the audit trail of a period or an incident")
    status.add_argument("report", choices=[*REPORTS, "incident"])
    status.add_argument("period", nargs="?", help="period, or the alert id of an incident")
    _period_options(status, "the period (instead of the positional argument)")
    status.add_argument("--refresh", action="store_true",
                        help="incident: ask the regulator for its current status")
    exporter = _command(commands, "exporter", "serve audit metrics for Prometheus")
    exporter.add_argument("--port", type=int, default=9469)
    _command(commands, "migrate", "apply the read contract and audit schema")
    _command(commands, "backup", "back the report database up, encrypted, to the evidence "
                                 "store, and prune old backups")
    _command(commands, "backups", "list the backups in the evidence store")
    restore = _command(
        commands, "restore",
        "restore a backup over the report database (it replaces what is there)")
    restore.add_argument("--backup", required=True, metavar="KEY",
                         help="the backup's key, as `ncc-report backups` lists it")
    restore.add_argument("--identity-file", required=True, type=Path, metavar="FILE",
                         help="the age identity that decrypts the backups (kept outside the "
                              "cluster)")
    return parser


def _period_options(command: argparse.ArgumentParser, help_text: str) -> None:
    options = command.add_mutually_exclusive_group()
    options.add_argument("--period", dest="period_option", metavar="PERIOD", help=help_text)
    options.add_argument("--date", dest="date_option", metavar="DAY",
                         help="the same as --period")


def _named_period(args: argparse.Namespace) -> tuple[str, str] | None:
    """(the option or argument as the operator typed it, its value)."""
    for option, value in (("--period", getattr(args, "period_option", None)),
                          ("--date", getattr(args, "date_option", None)),
                          ("period", getattr(args, "period", None))):
        if value:
            return option, value
    return None


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
        # Every argument and setting is checked here, before a connection is opened: a bad
        # period or a missing endpoint is the operator's to fix, whatever the database does.
        periods = _requested_periods(args, settings)
        sending = _sends(args, settings)
        transport = Transport.from_settings(settings) if sending else nullcontext(None)
        with transport as opened:
            return _dispatch(args, settings, periods, opened)
    except (ConfigError, ValueError) as error:  # settings, a malformed or unfinished period
        log.error("%s", error)
        print(f"ncc-report: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailable as error:
        log.error("%s", error, extra={"db_host": error.host, "db_port": error.port})
        print(f"ncc-report: {error}", file=sys.stderr)
        return EXIT_DATABASE
    except LockBusy as error:
        # An overlapping run (a manual one during the CronJob's) is not a failure: the run
        # holding the lock does the work.
        log.warning("%s", error)
        print(f"ncc-report: {error}; this run did nothing")
        return EXIT_OK
    except Exception as error:  # never a traceback for the operator; the log has the type
        log.error("unexpected failure: %s: %s", type(error).__name__, error)
        print(f"ncc-report: unexpected failure ({type(error).__name__}: {error}); nothing "
              "further was done, see the JSON log", file=sys.stderr)
        return EXIT_FAILED


def _requested_periods(args: argparse.Namespace, settings: JobSettings) -> list[Period] | None:
    """The period a report command names, parsed and refused if it ends before the licence's
    first data; None for the scheduled run (the last complete period and missed ones before
    it). Whether it has ended is decided on the database's clock, once connected."""
    named = _named_period(args)
    if args.command == "resolve" and args.report != "incident":
        parse_period(args.report, args.period, "period")
    if args.command == "status" and args.report != "incident":
        if not named:
            raise ValueError("status: give the period (or the alert id of an incident)")
        parse_period(args.report, named[1], named[0])
    if args.command not in REPORTS or not named:
        return None
    period = parse_period(cast(Report, args.command), named[1], named[0])
    ensure_after_first_data(period, settings.first_data_date)
    return [period]


def _sends(args: argparse.Namespace, settings: JobSettings) -> bool:
    if args.command in REPORTS:
        return not settings.dry_run
    return bool(args.command == "incidents" or (args.command == "status" and args.refresh))


def _dispatch(args: argparse.Namespace, settings: JobSettings, periods: list[Period] | None,
              transport: Transport | None) -> int:
    if args.command == "exporter":
        from jobs.exporter import serve

        serve(settings, args.port)
        return EXIT_OK
    if args.command == "restore":
        return _restore(args, settings)
    with connect(settings) as conn:
        clock.follow_database(conn)
        # A named period that has not ended is refused before anything is written: an
        # operator's mistake, not a run.
        for period in periods or ():
            ensure_ended(period, clock.now())
        if args.command not in runs.COMMANDS:
            return _run(args, conn, settings, periods, transport)
        if not settings.dry_run or args.command == "backup":
            apply_schema(conn)
        # The run records itself, so that one that fails, is killed or never comes pages
        # before the regulator's deadline (jobs/runs.py); a dry run records its run too.
        named = _named_period(args)
        run_id = runs.start(conn, args.command, license_number=settings.license_number,
                            environment=settings.environment,
                            dry_run=settings.dry_run and args.command != "backup",
                            named_period=named[1] if named else None)
        status, detail = EXIT_FAILED, None
        try:
            if args.command == "backup":
                status = _backup(settings, run_id)
            else:
                status = _run(args, conn, settings, periods, transport)
            return status
        except ValueError as error:
            status, detail = EXIT_USAGE, str(error)
            raise
        except LockBusy as error:
            status, detail = EXIT_OK, str(error)
            raise
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            raise
        finally:
            if run_id is not None:
                _finish_run(conn, run_id, status, detail)


def _finish_run(conn: Any, run_id: int, status: int, detail: str | None) -> None:
    # A connection lost during the run cannot take the end: the row stays open, and the
    # exporter counts it as killed once the run's deadline has passed.
    if conn.closed or conn.broken:
        return
    try:
        runs.finish(conn, run_id, status, detail)
    except psycopg.Error as error:
        log.warning("the end of run %d could not be recorded: %s", run_id, error)


def _run(args: argparse.Namespace, conn: Any, settings: JobSettings,
         periods: list[Period] | None, transport: Transport | None) -> int:
    now = clock.now()
    if settings.dry_run:
        # A dry run leaves the database as it found it: the schema it applies, the number
        # readings and first statuses it records all go with this transaction (its run's
        # own row, in ncc_audit.runs, excepted).
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return _work(args, conn, settings, periods, transport, now)
    return _work(args, conn, settings, periods, transport, now)


def _backup(settings: JobSettings, run_id: int | None) -> int:
    from jobs.backup import take_backup

    result = take_backup(settings, run_id)
    print(f"backup {result.key}: {result.bytes} bytes in {result.seconds:.1f} s, "
          f"{result.pruned} old backups pruned")
    return EXIT_OK


def _restore(args: argparse.Namespace, settings: JobSettings) -> int:
    from jobs.backup import close_restored_run, restore_backup

    restore_backup(settings, args.backup, args.identity_file)
    # A new connection: the restore replaced what the first one had read.
    with connect(settings) as conn:
        apply_schema(conn)
        close_restored_run(conn, settings, args.backup)
    print(f"restored {args.backup}")
    return EXIT_OK


def _work(args: argparse.Namespace, conn: Any, settings: JobSettings,
          periods: list[Period] | None, transport: Transport | None, now: dt.datetime) -> int:
    apply_schema(conn)
    if args.command == "migrate":
        return EXIT_OK
    if args.command == "backups":
        from jobs.backup import list_backups

        print("\n".join(list_backups(settings)))
        return EXIT_OK
    if args.command == "status":
        return _status(conn, settings, args, transport)
    if args.command == "resolve":
        return _resolve(conn, settings, args)
    if args.command == "incidents":
        assert transport is not None
        result = submit_incidents(conn, settings, transport.atrs, now)
        print(f"incidents: {result.submitted} submitted, {result.already} already "
              f"submitted, {result.failed} failed, {result.late} past the 1-hour deadline, "
              f"{result.awaiting} awaiting `ncc-report resolve`")
        _archive(conn, settings, transport)
        return EXIT_FAILED if result.failed or result.awaiting else EXIT_OK
    report = cast(Report, args.command)
    run = ReportRun(conn, settings, transport, confirm_empty=args.confirm_empty)
    chosen = periods if periods is not None else scheduled_periods(run, report, now)
    log.info("%s: %d period(s) to run: %s", report, len(chosen),
             ", ".join(p.label for p in chosen))
    for each in chosen:
        outcome = run.run(each)
        reference = (f" (reference {outcome.reference})" if outcome.reference else
                     " (no reference given by the regulator)" if outcome.status == "accepted"
                     else f": {outcome.detail}" if outcome.status == "no-data" else "")
        print(f"{report} {outcome.label}: {outcome.status}{reference}")
    _archive(conn, settings, transport)
    return EXIT_OK if all(outcome.ok for outcome in run.outcomes) else EXIT_FAILED


def _archive(conn: Any, settings: JobSettings, transport: Transport | None) -> None:
    """What the regulator accepted, this run and earlier ones, into the evidence archive. A
    failure leaves the acceptance as it is: the next run tries again, and the exporter's
    ncc_evidence_unarchived pages meanwhile."""
    if transport is None or transport.archive is None:
        return
    from jobs.archive import archive_pending

    outcome = archive_pending(conn, settings, transport.archive)
    if outcome.archived or outcome.failed:
        print(f"evidence: {outcome.archived} archived" + (
            f", {outcome.failed} not archived yet (the next run tries again)"
            if outcome.failed else ""))


def _resolve(conn: Any, settings: JobSettings, args: argparse.Namespace) -> int:
    label = (args.period if args.report == "incident"
             else parse_period(args.report, args.period, "period").label)
    who = {"license_number": settings.license_number, "environment": settings.environment}
    attempts = audit.latest_attempts(conn, args.report, label, **who)
    if not attempts or attempts[0].outcome != "unconfirmed":
        print(f"ncc-report: {args.report} {label} has no unanswered submission to resolve "
              f"(its newest attempt is {attempts[0].outcome if attempts else 'none'})",
              file=sys.stderr)
        return EXIT_USAGE
    audit.resolve_unconfirmed(conn, attempts[0], report=args.report, period=label,
                              reference=args.received, **who)
    if args.report == "incident" and args.received:
        body = attempts[0].request_body or {}
        audit.record_incident(conn, alert_id=label, incident_id=args.received,
                              detected_at=dt.datetime.fromisoformat(str(body["detectedAt"])),
                              status="RECEIVED", **who)
    print(f"{args.report} {label}: " + (f"recorded as accepted (reference {args.received})"
                                        if args.received else
                                        "recorded as not received; the next run resends it"))
    return EXIT_OK


def _status(conn: Any, settings: JobSettings, args: argparse.Namespace,
            transport: Transport | None) -> int:
    named = _named_period(args)
    if not named:
        raise ValueError("status: give the period (or the alert id of an incident)")
    key = named[1]
    if args.report == "incident":
        record = audit.incident(conn, key, settings.license_number, settings.environment)
        if record and args.refresh and record["incident_id"] is None:
            print("ncc-report: the regulator accepted this incident without an incident id; "
                  "its status cannot be asked for", file=sys.stderr)
        elif record and args.refresh:
            assert transport is not None
            remote = transport.atrs.incident_status(record["incident_id"])
            audit.update_incident_status(conn, key, settings.license_number,
                                         settings.environment, str(remote.get("status")))
            record = audit.incident(conn, key, settings.license_number, settings.environment)
        history = audit.period_history(conn, "incident", key, settings.license_number)
        print(audit.dumps({"incident": record, **history}))
        return 0 if record else 1
    label = parse_period(args.report, key, named[0]).label
    history = audit.period_history(conn, args.report, label, settings.license_number)
    print(audit.dumps({"report": args.report, "period": label, **history}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
