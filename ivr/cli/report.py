"""`ivr report`: the reports of `queues.reports` on the command line, as a table, CSV or JSON.

    ivr report [--by segment|line|queue|agent|intent|total] [--period day|week|month]
               [--date D | --from D --to D] [--bucket hour|day|week|month]
               [--line L] [--queue Q] [--segment S] [--csv | --json]

The period is the day, ISO week or month that holds ``--date`` (today in the
contact center's time zone by default), or the days ``--from`` .. ``--to``
(``--to`` not included); the figures count with ``reports`` of the
configuration.  The table shows each row's figures over the whole period;
``--csv`` adds a line per bucket (the API's CSV), ``--json`` is the API's
answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from zoneinfo import ZoneInfo

from ivr.cli import day
from ivr.config import Config
from queues.reports import BUCKETS, DIMENSIONS, Filters, Period, Report, ReportError, csv_text, report

_TABLE = (  # heading, figure, how it is shown
    ("calls", "calls", "n"), ("self-served", "containment", "%"), ("to queues", "offered", "n"),
    ("abandoned", "abandon_rate", "%"), ("SL", "service_level", "%"), ("ASA", "asa", "s"), ("AHT", "aht", "s"),
    ("FCR", "fcr", "%"), ("CSAT", "csat", "2"), ("CSAT 4-5", "csat_satisfied", "%"), ("NPS", "nps", "0"),
    ("top-1", "top1", "%"), ("top-3", "top3", "%"),
)


def add_commands(sub: Any) -> None:
    """Add this group's sub-parsers to the `ivr` parser's `sub`."""
    parser = sub.add_parser("report", help="the reports: calls, containment, service level, FCR, CSAT, NPS...",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS,
                        help="configuration file (default: $IVR_CONFIG or config/ivr.yaml)")
    parser.add_argument("--by", choices=DIMENSIONS, default="segment", help="the breakdown (default: segment)")
    parser.add_argument("--period", choices=("day", "week", "month"), default=None,
                        help="the day, week or month that holds --date (default: day)")
    parser.add_argument("--date", type=day, metavar="D", help="a day of the period, YYYY-MM-DD (default: today)")
    parser.add_argument("--from", dest="first", type=day, metavar="D", help="the first day of a custom period")
    parser.add_argument("--to", dest="end", type=day, metavar="D", help="the day after the last one of a custom period")
    parser.add_argument("--bucket", choices=BUCKETS, help="the columns: hours, days, weeks or months "
                        "(default: by the period's length)")
    parser.add_argument("--line", help="only the calls of this line")
    parser.add_argument("--queue", help="only the calls of this queue")
    parser.add_argument("--segment", help="only the calls of this customer segment")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--csv", action="store_true", help="CSV with a header row, a line per row and bucket")
    shown.add_argument("--json", action="store_true", help="the report as JSON")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace, config: Config) -> int:
    from ivr.cli import _database

    custom = args.first is not None or args.end is not None
    if custom and (args.period is not None or args.date is not None):
        print("ivr report: --from and --to make a period of their own: leave out --period and --date",
              file=sys.stderr)
        return 2
    try:
        period = Period.of("custom" if custom else args.period or "day", ZoneInfo(config.timezone),
                           day=args.date, first=args.first, end=args.end)
    except ReportError as exc:
        print(f"ivr report: {exc}", file=sys.stderr)
        return 2
    filters = Filters(line=args.line, queue=args.queue, segment=args.segment)

    async def go() -> Report:
        async with _database(config) as db:
            return await report(db, period, config.reports, dimension=args.by, bucket=args.bucket,
                                filters=filters)

    try:
        found = asyncio.run(go())
    except ReportError as exc:
        print(f"ivr report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found.to_dict(), ensure_ascii=False, indent=2))
    elif args.csv:
        sys.stdout.write(csv_text(found.table(), line_end="\n"))
    else:
        print(format_table(found))
    return 0


def format_table(found: Report) -> str:
    """The rows' figures over the whole period, aligned, the total last."""
    rows = [*found.rows, found.total] if found.dimension != "total" else [found.total]
    names = [_name(row.key, row.label) if row is not found.total else "total" for row in rows]
    cells = [[name] + [_shown(row.total.figures()[figure], how) for _, figure, how in _TABLE]
             for name, row in zip(names, rows)]
    heading = [found.dimension] + [title for title, _, _ in _TABLE]
    widths = [max(len(line[i]) for line in [heading, *cells]) for i in range(len(heading))]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    period = found.period
    settings = found.settings
    out = [f"{period.kind} {period.first} .. {period.end} (not included), {period.zone.key}; "
           f"SL within {settings['service_level_seconds']:g} s, abandons within "
           f"{settings['short_abandon_seconds']:g} s left out; FCR: no repeat within "
           f"{settings['repeat_call_days']} days", line(heading), line(["-" * w for w in widths])]
    out += [line(values) for values in cells]
    return "\n".join(out)


def _name(key: Any, label: str | None) -> str:
    if key is None:
        return "(none)"
    return label if label and label != str(key) else str(key)


def _shown(value: Any, how: str) -> str:
    if value is None:
        return "-"
    if how == "%":
        return f"{value * 100:.0f}%"
    if how == "s":
        return f"{value:.0f} s"
    if how == "n":
        return str(value)
    return f"{value:.{how}f}"
