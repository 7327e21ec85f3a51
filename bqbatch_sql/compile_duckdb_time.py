"""Compile stage, DuckDB half: date and time rules (see compile_duckdb.py).

BigQuery's DATE, DATETIME and TIMESTAMP map onto DuckDB's DATE, TIMESTAMP and
TIMESTAMPTZ; the rules below fix result types, part numbering, interval counting
and format elements that differ, measured on DuckDB 2.0 with the UTC session of
DUCKDB_SETTINGS.
"""

from __future__ import annotations

import re

from sqlglot import exp

from bqbatch_sql.compile_support import Ctx, cast_target, dtype, fn, lit, set_kind, kind_of


def date_result(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # DATE_ADD/DATE_SUB/DATE_FROM_UNIX_DATE return DATE in BigQuery; DuckDB's
    # date + INTERVAL returns TIMESTAMP, which then prints and serializes differently.
    if isinstance(node, exp.DateTrunc) and kind_of(node.this) != "date":
        return None  # DATE_TRUNC of a TIMESTAMP/DATETIME keeps its type
    if isinstance(node.parent, exp.Cast) and cast_target(node.parent) == exp.DType.DATE:
        return None
    return set_kind(exp.Cast(this=node, to=dtype("DATE")), "date")


def timestamp_diff(node: exp.TimestampDiff, ctx: Ctx) -> exp.Expression | None:
    # TIMESTAMP_DIFF counts whole intervals (10:00:00 - 09:00:30 is 59 MINUTEs);
    # sqlglot emits DuckDB date_diff, which counts boundaries crossed (60). DuckDB's
    # date_sub counts whole intervals. (DATE_DIFF/DATETIME_DIFF do count boundaries.)
    unit = node.args.get("unit")
    name = unit.name.upper() if unit is not None else "DAY"
    return set_kind(fn("date_sub", lit(name), node.expression, node.this), "int")


def unix_to_timestamp(node: exp.UnixToTime, ctx: Ctx) -> exp.Expression | None:
    # TIMESTAMP_MILLIS/MICROS return a TIMESTAMP (UTC instant); sqlglot's epoch_ms() and
    # make_timestamp() return DuckDB's zone-less TIMESTAMP, which prints without '+00'
    # and compares as a civil time. Under the UTC session the cast is exact.
    if isinstance(node.parent, exp.Cast) and cast_target(node.parent) == exp.DType.TIMESTAMPTZ:
        return None
    return set_kind(exp.Cast(this=node, to=dtype("TIMESTAMPTZ")), "timestamp")


def current_civil_time(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # CURRENT_DATETIME does not exist in DuckDB, and CURRENT_DATE follows the session
    # time zone; BigQuery means UTC unless a zone is given.
    zone = node.this if isinstance(node.this, exp.Expression) else lit("UTC")
    local = exp.AtTimeZone(this=exp.CurrentTimestamp(), zone=zone)
    target = "DATE" if isinstance(node, exp.CurrentDate) else "TIMESTAMP"
    return set_kind(exp.Cast(this=local, to=dtype(target)), "date" if target == "DATE" else "datetime")


def extract_part(node: exp.Extract, ctx: Ctx) -> exp.Expression | None:
    # Date parts whose numbering differs: BigQuery DAYOFWEEK is 1 (Sunday)..7, DuckDB
    # 0..6; BigQuery WEEK counts Sunday-started weeks from 0 (%U), DuckDB WEEK is ISO;
    # MILLISECOND/MICROSECOND are within the second in BigQuery, within the minute in DuckDB.
    part, value = node.this, node.expression
    if isinstance(part, exp.WeekStart):
        day = part.this.name.upper()
        if day not in ("SUNDAY", "MONDAY"):
            ctx.reject(node, f"EXTRACT(WEEK({day}) ...)",
                       "DuckDB numbers weeks starting on SUNDAY or MONDAY only; use WEEK, WEEK(MONDAY) or ISOWEEK.")
        return _strftime_int(value, "%U" if day == "SUNDAY" else "%W")
    name = part.name.upper()
    if name == "DAYOFWEEK":
        return set_kind(exp.Paren(this=exp.Add(this=node, expression=exp.Literal.number(1))), "int")
    if name == "WEEK":
        return _strftime_int(value, "%U")
    if name == "ISOWEEK":
        node.set("this", exp.var("WEEK"))
        return node
    if name in ("MILLISECOND", "MICROSECOND"):
        modulus = 1000 if name == "MILLISECOND" else 1000000
        return set_kind(exp.Paren(this=exp.Mod(this=node, expression=exp.Literal.number(modulus))), "int")
    if name in ("DATE", "TIME", "DATETIME"):
        target = {"DATE": "DATE", "TIME": "TIME", "DATETIME": "TIMESTAMP"}[name]
        return exp.Cast(this=value, to=dtype(target))
    return None


def _strftime_int(value: exp.Expression, pattern: str) -> exp.Expression:
    return set_kind(exp.Cast(this=fn("strftime", value, lit(pattern)), to=dtype("BIGINT")), "int")


# sqlglot has already turned BigQuery format elements into its neutral (Python) form;
# these are the ones DuckDB's strftime/strptime read the way BigQuery does.
_SAME_FORMAT_ELEMENTS = set("YmdHMSAaBbhjUWuwyGVIpX%f")
_FORMAT_FIXES = {
    "-d": "%e pads single-digit days with a space in BigQuery; DuckDB cannot. Use %d",
    "e": "%c contains %e (space-padded day), which DuckDB cannot produce. Spell it out, e.g. '%a %b %d %H:%M:%S %Y'",
    "z": "%z is '+0000' in BigQuery, '+00' in DuckDB. Format the offset yourself or omit it",
    "Z": "%Z (time zone name) is empty for DuckDB timestamps. Write the zone as literal text",
    "g": "%g is the ISO year without century in BigQuery, milliseconds in DuckDB. Use %G",
    "n": "%n is a newline in BigQuery, nanoseconds in DuckDB. Put a newline in the literal instead",
}
_FORMAT_ELEMENT = re.compile(r"%(-?.)")


def time_format(node: exp.Expression, ctx: Ctx) -> exp.Expression | None:
    # FORMAT_/PARSE_ DATE/DATETIME/TIMESTAMP: a few format elements mean something else
    # in DuckDB (%g, %n, %z...) or are unknown to it (%Q, %E*S...); the zone argument of
    # FORMAT_TIMESTAMP / PARSE_TIMESTAMP is dropped by sqlglot. Check and fix both.
    fmt = node.args.get("format")
    if fmt is not None:
        if not (isinstance(fmt, exp.Literal) and fmt.is_string):
            ctx.reject(node, "a date/time format that is not a string literal",
                       "Write the format as a literal so it can be checked for DuckDB.")
        for m in _FORMAT_ELEMENT.finditer(fmt.this.replace("%%", "")):
            element = m.group(1)
            if element in _SAME_FORMAT_ELEMENTS:
                continue
            if element in _FORMAT_FIXES:
                # Name the element as the user wrote it (sqlglot rewrote %e as %-d, %c as ...%e...).
                written = {"-d": "%e", "e": "%c"}.get(element, f"%{element}")
                ctx.reject(node, f"date/time format element '{written}'", _FORMAT_FIXES[element] + ".")
            ctx.reject(node, f"date/time format element '%{element}'",
                       "DuckDB's strftime/strptime cannot handle it; supported: "
                       "%Y %m %d %H %M %S %A %a %B %b %h %j %U %W %u %w %y %G %V %I %p %x %X %D %F %T %E6S %%.")
    zone = node.args.get("zone")
    if zone is None:
        if isinstance(node, exp.StrToTime) and not (
            isinstance(node.parent, exp.Cast) and cast_target(node.parent) == exp.DType.TIMESTAMPTZ
        ):
            # PARSE_TIMESTAMP returns a TIMESTAMP (an instant, UTC); DuckDB's strptime
            # returns a zone-less TIMESTAMP unless the format has %z.
            return set_kind(exp.Cast(this=node, to=dtype("TIMESTAMPTZ")), "timestamp")
        return None
    node.set("zone", None)
    if isinstance(node, exp.TimeToStr):
        # Render the wall-clock time in `zone`, as FORMAT_TIMESTAMP(fmt, ts, zone) does.
        inner = node.this.this if isinstance(node.this, exp.TsOrDsToTimestamp) else node.this
        node.set("this", exp.AtTimeZone(this=exp.Cast(this=inner, to=dtype("TIMESTAMPTZ")), zone=zone))
        return node
    # PARSE_TIMESTAMP(fmt, text, zone): the parsed wall-clock time is in `zone`.
    return set_kind(exp.AtTimeZone(this=node, zone=zone), "timestamp")


TIME_RULES = [
    ((exp.DateAdd, exp.DateSub, exp.DateFromUnixDate, exp.DateTrunc), date_result),
    ((exp.TimestampDiff,), timestamp_diff),
    ((exp.UnixToTime,), unix_to_timestamp),
    ((exp.CurrentDate, exp.CurrentDatetime), current_civil_time),
    ((exp.Extract,), extract_part),
    ((exp.TimeToStr, exp.StrToTime, exp.StrToDate, exp.ParseDatetime), time_format),
]
