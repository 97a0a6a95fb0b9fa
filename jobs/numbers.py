"""Phone numbers in E.164, read by libphonenumber's Python port, for the read contract.

The aggregation stays in the database: before a period is read, the raw numbers of its alerts
that the contract's `numbers` table does not hold yet are read here and stored with their E.164
form (or none). The first reading of a raw number stays, so a package regenerates byte for
byte even after a library update changes the numbering metadata.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import phonenumbers
import psycopg
from psycopg import sql

from jobs.database import READ_CONTRACT, READINGS

# Numbers without a country code are Nigerian: the engine records interconnect traffic.
DEFAULT_REGION = "NG"
READ_BY = f"phonenumbers {phonenumbers.__version__}"


def e164(raw: str) -> str | None:
    """The E.164 form of `raw`, or None when libphonenumber finds no valid number in it."""
    text = raw.strip()
    if not text or any(character.isalpha() for character in text):
        return None
    digits = "".join(character for character in text if character.isdigit())
    candidates = []
    if text.startswith("+"):
        candidates.append(text)
    elif digits.startswith("00"):
        candidates.append("+" + digits[2:])  # the international prefix
    elif digits.startswith("234") and len(digits) > 11:
        candidates.append("+" + digits)  # the country code without its plus
    candidates.append(text)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, DEFAULT_REGION)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return None


def record_numbers(conn: psycopg.Connection[Any], since: dt.datetime, until: dt.datetime
                   ) -> int:
    """Read and store the period's raw numbers the contract has no reading of; how many.
    The period's alert statuses are frozen at their first reading in the same step."""
    schema = sql.Identifier(READ_CONTRACT)
    with conn.transaction():
        conn.execute(sql.SQL("SELECT {}.record_statuses(%s, %s)").format(schema),
                     (since, until))
        unread = [row[0] for row in conn.execute(
            sql.SQL("SELECT raw FROM {}.unread_numbers(%s, %s)").format(schema),
            (since, until)).fetchall()]
        if unread:
            # Through a temporary table: a job reading the same numbers at the same time
            # (daily and incidents) keeps its own first reading, and neither fails.
            conn.execute("CREATE TEMP TABLE new_numbers (raw text, e164 text) ON COMMIT DROP")
            with conn.cursor() as cursor, cursor.copy(
                    "COPY new_numbers (raw, e164) FROM STDIN") as copy:
                for raw in unread:
                    copy.write_row((raw, e164(raw)))
            conn.execute(sql.SQL("INSERT INTO {}.numbers (raw, e164, read_by)"
                                 " SELECT raw, e164, %s FROM new_numbers"
                                 " ON CONFLICT (raw) DO NOTHING").format(
                                     sql.Identifier(READINGS)), (READ_BY,))
    return len(unread)
