"""The `ivr` command: the one entry point of the server and its tools.

The server's own commands are here; a group of commands about one subject has its module beside this
one (`ivr.cli.report`, `ivr.cli.model`), which adds its sub-parsers in `add_commands(sub)`.  A handler
takes the parsed arguments and the loaded `Config` and returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conffile import ConfigError
from ivr.config import Config, load_config

if TYPE_CHECKING:
    from caller_id.store import Database


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from ivr.server import setup_logging

    setup_logging(os.environ.get("IVR_LOG_LEVEL", "WARNING" if args.handler is not _run else "INFO"))
    try:
        config = load_config(args.config)
        return args.handler(args, config) or 0
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ivr",
        description="Voice contact-center server for Asterisk: identifies callers, predicts why they "
        "call and routes them (FastAGI), with local speech.",
    )
    parser.add_argument("--config", "-c", help="configuration file (default: $IVR_CONFIG or config/ivr.yaml)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run the server in the foreground until Ctrl-C")
    run.add_argument("--demo-data", action="store_true", help="seed demo customers into an empty database")
    run.add_argument("--workers", type=int, help="FastAGI worker processes sharing the port")
    run.set_defaults(handler=_run)

    db = sub.add_parser("db", help="create, seed and import the CRM database")
    db_sub = db.add_subparsers(title="db commands", metavar="ACTION")
    init = db_sub.add_parser("init", help="create or upgrade the schema (Alembic migrations)")
    init.set_defaults(handler=_db_init)
    seed = db_sub.add_parser("seed", help="add realistic demo data")
    seed.add_argument("--customers", type=int, default=2000, help="how many customers (default 2000)")
    seed.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same data")
    seed.add_argument("--calls", type=_whole, default=0, metavar="N",
                      help="also a call history of N calls over the seeded customers, their real reasons "
                           "confirmed on most (what `ivr model train` learns from; default none)")
    seed.add_argument("--days", type=positive, default=60.0, metavar="D",
                      help="the call history covers the last D days (default 60)")
    seed.set_defaults(handler=_db_seed)
    imp = db_sub.add_parser(
        "import", help="import customers, numbers and cases from CSV or JSON lines",
        description=textwrap.fill(
            "Import CRM data, all or nothing: every row is checked first, and when any is wrong the "
            "command lists each bad row by its line and writes nothing. A record whose key is already in "
            "the database is updated, otherwise created; nothing is deleted.", 90),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", type=Path, help="a .csv file, or JSON lines (.jsonl or .ndjson)")
    imp.set_defaults(handler=_db_import)
    _epilog_when_shown(imp, _import_file_format)

    lookup = sub.add_parser("lookup", help="show what a call from NUMBER would get")
    lookup.add_argument("number", help="the calling number as Asterisk would deliver it")
    lookup.add_argument("--line", help="dialled line name or number (default: the default line)")
    lookup.add_argument("--role", type=int, help="answer the role question with this digit")
    lookup.add_argument("--json", action="store_true", help="one JSON object")
    lookup.set_defaults(handler=_lookup)

    rules = sub.add_parser(
        "rules", help="check the routing rules file",
        description="Check a routing rules file as the server loads it: conditions, the lines of the "
        "configuration, the intents of the catalogue, and every queue against the queues Asterisk's "
        "queues.conf defines. Errors name the file and line.")
    rules.add_argument("file", nargs="?", type=Path, help="default: the configured rules file")
    rules.add_argument("--queues-conf", type=Path, metavar="FILE",
                       help="Asterisk's queues.conf to check the queues against (default: $IVR_QUEUES_CONF, "
                            "else the shipped asterisk_conf/queues.conf; when the file is absent the check "
                            "is skipped with a warning)")
    rules.set_defaults(handler=_rules_check)

    user = sub.add_parser("user", help="manage the logins of the web pages")
    user_sub = user.add_subparsers(title="user commands", metavar="ACTION")
    add = user_sub.add_parser(
        "add", help="create a login (the password is asked twice, or read from a file or standard input)",
        description="Create a login of the web pages. The password (at least 8 characters) comes from "
        "--password-file, else is asked twice on a terminal, else is the first line of standard input.")
    _config_option(add)
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=("agent", "supervisor", "admin"),
                     help="agent: the agent's screen of the calls that ring them; supervisor: also the "
                          "wallboard, every call and the queue actions; admin: everything a supervisor may")
    who = add.add_mutually_exclusive_group()
    who.add_argument("--agent-id", type=int, help="the agent (agents table id) an agent login acts as")
    who.add_argument("--agent-interface", help="the same, by Asterisk interface, e.g. PJSIP/1001")
    add.add_argument("--password-file", type=Path, help="read the password from this file's first line")
    add.set_defaults(handler=_user_add)

    demo = sub.add_parser(
        "demo", help="the whole server with a simulated Asterisk placing calls",
        description="Run the server (FastAGI, AMI client, screen-pops, wallboard, web pages) against a "
        "simulated Asterisk in this process, and place calls through it: open the printed address and log "
        "in as supervisor or as an agent. The demo uses its own SQLite file (demo.sqlite3 beside the "
        "configured one, seeded on first start), no Redis, and FastAGI on a free loopback port.")
    _config_option(demo)
    demo.add_argument("--calls-per-minute", type=positive, default=12.0, metavar="N",
                      help="new calls a minute, on average (default 12)")
    demo.add_argument("--duration", type=positive, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    demo.add_argument("--talk", type=_seconds_range, default=(10.0, 40.0), metavar="MIN-MAX",
                      help="seconds an agent talks (default 10-40)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the callers (default 1)")
    demo.add_argument("--database", metavar="URL", help="the demo's database (default: demo.sqlite3 beside "
                      "the configured SQLite file); the configured URL runs the demo on your CRM")
    demo.add_argument("--web-port", type=int, metavar="N", help="port of the web pages (default: web.port)")
    demo.set_defaults(handler=_demo)

    sim = sub.add_parser("simulate", help="place simulated Asterisk calls against a FastAGI server")
    sim.add_argument("--calls", type=int, default=100, help="how many calls to place (default 100)")
    sim.add_argument("--concurrency", type=int, default=10, help="callers at once (closed loop)")
    sim.add_argument("--rate", type=float, help="offer new calls at this rate per second (open loop)")
    sim.add_argument("--host", help="FastAGI host (default: from the configuration)")
    sim.add_argument("--port", type=int, help="FastAGI port (default: from the configuration)")
    sim.add_argument("--number", action="append", default=[], help="calling number (repeatable)")
    sim.add_argument("--numbers", type=Path, help="file with one calling number per line")
    sim.add_argument("--line", action="append", default=[], help="line names to call (repeatable)")
    sim.add_argument("--dtmf", default="1", help="what callers press when asked (empty: nothing)")
    sim.add_argument("--hangup-rate", type=float, default=0.0, help="share of callers hanging up mid-call")
    sim.add_argument("--garbage-rate", type=float, default=0.05, help="share of calls with garbage caller IDs")
    sim.add_argument("--seed", type=int, default=1,
                     help="seed of the random mix of numbers, lines and hang-ups (the same seed, the same calls)")
    sim.add_argument("--fast", action="store_true",
                     help="answer every AGI command at once instead of after its prompt and key wait, "
                          "as Asterisk does (for load tests)")
    sim.add_argument("--verbose", "-v", action="store_true", help="print every call")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim.set_defaults(handler=_simulate)

    from ivr.cli import model, report

    for group in (report, model):
        group.add_commands(sub)
    return parser


def _epilog_when_shown(parser: argparse.ArgumentParser, epilog: Any) -> None:
    """Give `parser` the text `epilog()` returns, computed only when its help is shown (the importer's
    file format needs the database modules, which every other command would pay for)."""
    shown = parser.format_help

    def format_help() -> str:
        parser.epilog = epilog()
        return shown()

    parser.format_help = format_help  # type: ignore[method-assign]


def _import_file_format() -> str:
    from caller_id.importer import FORMAT_HELP

    return FORMAT_HELP


def _config_option(parser: argparse.ArgumentParser) -> None:
    """`--config` after the command too (`ivr demo --config F`); before it works as well."""
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS,
                        help="configuration file (default: $IVR_CONFIG or config/ivr.yaml)")


def day(text: str) -> dt.date:
    """An argument that is a day, YYYY-MM-DD (`ivr report`, `ivr model`)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


def positive(text: str) -> float:
    """An argument that is a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _seconds_range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX seconds, e.g. 10-40, got {text!r}") from None
    if not 0 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return pair


@asynccontextmanager
async def _database(config: Config, *, migrate: bool = True) -> AsyncIterator[Database]:
    """The configured CRM database, brought to the newest schema first unless `migrate` is False;
    disposed of on the way out."""
    from caller_id.store import Database

    db = Database(config.database_url)
    try:
        if migrate:
            await db.migrate()
        yield db
    finally:
        await db.dispose()


# -- handlers -----------------------------------------------------------------


def _run(args: argparse.Namespace, config: Config) -> int:
    from dataclasses import replace

    from ivr.supervisor import run

    if args.workers:
        config = replace(config, agi=replace(config.agi, workers=args.workers))
    prepare = None
    if args.demo_data:
        from ivr.sim.demo import demo_data as prepare
    return run(config, prepare=prepare)


def _user_add(args: argparse.Namespace, config: Config) -> int:
    from ivr.web.auth import add_user, agent_id_for_interface

    try:
        password = _read_password(args.password_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def go() -> int:
        async with _database(config) as db:
            agent_id = args.agent_id
            if args.agent_interface:
                agent_id = await agent_id_for_interface(db, args.agent_interface)
            return await add_user(db, args.username, password, args.role, agent_id)

    try:
        user_id = asyncio.run(go())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.username!r} ({args.role}) created with id {user_id}")
    return 0


def _read_password(path: Path | None) -> str:
    """From the file, from a terminal (asked twice) or from standard input."""
    import getpass

    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _demo(args: argparse.Namespace, config: Config) -> int:
    from ivr.sim.demo import Pace, demo_config, run_demo

    if args.web_port is not None and not 0 < args.web_port <= 65535:
        print(f"error: --web-port must be 1..65535, got {args.web_port}", file=sys.stderr)
        return 2
    config = demo_config(config, database=args.database, web_port=args.web_port)
    try:
        stats = asyncio.run(run_demo(config, calls_per_minute=args.calls_per_minute, duration=args.duration,
                                     seed=args.seed, pace=Pace(talk=args.talk), say=_say,
                                     handle_signals=True))
    except OSError as exc:  # a port in use, most likely
        where = f"{config.web.host}:{config.web.port}"
        print(f"error: the demo could not start: {exc.strerror or exc}"
              + (f" (web pages on {where}: is `ivr run` still running? --web-port picks another port)"
                 if exc.errno == errno.EADDRINUSE else ""), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"demo: {stats.summary()}", flush=True)
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _db_init(args: argparse.Namespace, config: Config) -> int:
    from caller_id.store import display_url

    async def go() -> None:
        async with _database(config):
            pass  # opening it brought the schema up to date

    asyncio.run(go())
    print(f"database ready: {display_url(config.database_url)}")
    return 0


def _db_seed(args: argparse.Namespace, config: Config) -> int:
    from caller_id.catalogue import load_catalogue
    from caller_id.seed import SeedError, seed
    from caller_id.seed_history import seed_history

    catalogue = load_catalogue(config.intents_file) if args.calls else None

    async def go() -> tuple[Any, Any]:
        async with _database(config) as db:
            summary = await seed(db, args.customers, seed=args.seed, progress=sys.stderr.isatty())
            history = None
            if catalogue is not None:
                history = await seed_history(db, catalogue, args.calls, seed=args.seed, days=args.days,
                                             zone=config.timezone,
                                             queues={line.name: line.default_queue for line in config.lines})
            return summary, history

    started = time.perf_counter()
    try:
        summary, history = asyncio.run(go())
    except SeedError as exc:
        print(f"ivr db seed: {exc}", file=sys.stderr)
        return 1
    print(f"seeded in {time.perf_counter() - started:.1f} s: {summary}")
    if history is not None:
        print(f"call history: {history}")
    return 0


def _db_import(args: argparse.Namespace, config: Config) -> int:
    from caller_id.catalogue import load_catalogue
    from caller_id.importer import CASE_STATUSES, ImportRowsError, import_file

    # A status the catalogue matches on is known too: the administrator who adds one there can import it.
    catalogue = load_catalogue(config.intents_file)
    statuses = set(CASE_STATUSES).union(*(spec.cases.statuses for spec in catalogue.intents
                                          if spec.cases is not None and spec.cases.statuses))

    async def go() -> Any:
        async with _database(config) as db:
            return await import_file(db, args.file, progress=sys.stderr.isatty(), region=config.region,
                                     statuses=statuses)

    try:
        summary = asyncio.run(go())
    except ImportRowsError as exc:
        print(str(exc), file=sys.stderr)  # "<file>: N bad rows, nothing imported" and the rows
        return 1
    except OSError as exc:
        print(f"{args.file}: {exc.strerror or exc}; nothing imported", file=sys.stderr)
        return 1
    except ConfigError:
        raise
    except ValueError as exc:  # not a file type the importer reads
        print(f"{exc}; nothing imported", file=sys.stderr)
        return 1
    print(f"imported {args.file}: {summary}")
    return 0


def _lookup(args: argparse.Namespace, config: Config) -> int:
    from ivr.call.decision import decide
    from ivr.call.inbound import role_question
    from ivr.services import build_services

    line = _line_named(config, args.line) if args.line is not None else config.line_for(None)
    if line is None:
        from conffile import did_you_mean

        names = [candidate.name for candidate in config.lines]
        print(f"ivr lookup: unknown line {args.line!r}{did_you_mean(args.line, names)}; the lines of "
              f"{config.source} are: {_lines_listed(config)}", file=sys.stderr)
        return 2

    async def go() -> dict[str, Any]:
        services = await build_services(config, listen=False)  # prompts: the dialog's timing
        try:
            lookup = await services.directory.lookup(args.number, region=config.region)
            decision = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current,
                              now=services.now(), ranker=services.ranker)
            asked = decision.question
            if asked and args.role is not None:
                if not 1 <= args.role <= len(asked):
                    raise SystemExit(f"--role must be 1..{len(asked)} for this caller")
                decision = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current,
                                  now=services.now(), role=asked[args.role - 1], ranker=services.ranker)
            result = decision.to_dict()
            result["caller_id"] = args.number
            # No usable number: "withheld" when the caller ID carries no digits (anonymous, restricted, empty).
            result["number_withheld"] = lookup.number is None and not any(ch.isdigit() for ch in args.number)
            result["question"] = [role.label for role in asked]
            before = 0.0
            if asked and services.prompts is not None:
                language = decision.view.language or line.language
                prompt, wait_ms = await role_question(services, asked, language, elapsed=0.0)
                result["question_prompt"] = services.selfservice.script.role_question(asked, language)
                result["question_seconds"] = {"prompt": round(prompt.seconds, 2), "wait": wait_ms / 1000}
                if args.role is None:  # the caller presses nothing at it
                    before = prompt.seconds + wait_ms / 1000
            result["silent_caller"] = await _silent_caller(services, decision, before)
            return result
        finally:
            await services.close()

    result = asyncio.run(go())
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(_format_lookup(result))
    return 0


async def _silent_caller(services: Any, decision: Any, before: float) -> dict[str, Any]:
    """What a caller of this decision who answers nothing hears, with its timing (`ivr lookup`)."""
    why = None
    if decision.line.self_service == "off":
        why = f"line {decision.line.name} has no self-service dialog"
    elif not decision.route.self_service:
        why = f"rule {decision.route.rule} sends the caller to a person"
    elif services.selfservice is None:
        why = "prompt synthesis is off"
    path = None if why else await services.selfservice.silent_path(decision, services.now(), before=before)
    if path is None:
        return {"dialog": None, "why": why or "no dialog for this caller", "to_queue": round(before, 2)}
    return {"dialog": [{"step": h.step, "prompt": round(h.prompt, 2), "wait": h.wait} for h in path.heard],
            "before": round(path.before, 2), "to_queue": round(path.to_queue, 2), "budget": path.budget,
            "reason": path.reason, "described": path.describe()}


def _line_named(config: Config, name_or_number: str) -> Any:
    """The line called by this name or dialled number, or None (`Config.line_for` falls back instead)."""
    digits = name_or_number.lstrip("+")
    for line in config.lines:
        if name_or_number == line.name or (digits and digits in (n.lstrip("+") for n in line.numbers)):
            return line
    return None


def _lines_listed(config: Config) -> str:
    return ", ".join(line.name + (f" ({', '.join(line.numbers)})" if line.numbers else "") for line in config.lines)


def _format_lookup(r: dict[str, Any]) -> str:
    if r["number"]:
        number = r["number"]
    elif r.get("number_withheld"):
        number = f"withheld (caller ID {r.get('caller_id', '')!r})"
    else:
        number = f"no usable number (caller ID {r.get('caller_id', '')!r})"
    out = [f"number    : {number}   line: {r['line']}   "
           f"(lookup: {r['lookup']['source']}, {r['lookup']['elapsed_ms']} ms)"]
    if r["lookup"]["degraded"]:
        out.append(f"degraded  : {r['lookup']['degraded']}")
    customer = r["customer"]
    if customer is None:
        if r["lookup"]["source"] == "invalid_number":
            why = "the number is withheld" if r.get("number_withheld") else "the caller ID is not a phone number"
            out.append(f"customer  : unknown caller ({why}: the CRM was not asked)")
        elif r["lookup"]["degraded"]:
            out.append("customer  : unknown caller (the CRM did not answer)")
        else:
            out.append("customer  : unknown caller (the number is not in the CRM)")
    else:
        out.append(f"customer  : #{customer['id']} {customer['name']} (language {customer['language']})")
        out.append(f"segment   : {r['segment']}{'   VIP' if r['is_vip'] else ''}")
        if r["manager"]:
            out.append(f"manager   : {r['manager']['name']} <{r['manager']['interface']}>")
    if r["roles"]:
        out.append("roles     : " + "; ".join(role["label"] for role in r["roles"]))
    if r["role"]:
        out.append(f"this call : as {r['role']['label']}")
    if r["question"]:
        timing = r.get("question_seconds")
        heard = f"   ({timing['prompt']:.1f} s, wait {timing['wait']:g} s)" if timing else ""
        out.append("asked     : " + r.get("question_prompt", "") + heard)
    if r["open_cases"]:
        out.append("open cases:")
        for case in r["open_cases"]:
            due = f", due {case['due_at'][:10]}" if case["due_at"] else ""
            out.append(f"  #{case['id']} [{case['status']}] {case['product']}: {case['title']}{due}")
    out.append("intents   :")
    for intent in r["intents"]:
        out.append(f"  {intent['score']:.2f}  {intent['intent']}")
        for reason in intent["reasons"]:
            out.append(f"        - {reason}")
    route = r["route"]
    out.append(f"route     : queue {route['queue']}, priority {route['priority']} (rule {route['rule']})")
    if route.get("manager_interface"):
        out.append(f"            manager first: {route['manager_interface']} for {route['manager_timeout']} s")
    if route.get("announcement"):
        out.append(f"            announcement: {route['announcement']}")
    silent = r.get("silent_caller") or {}
    if silent.get("dialog") is not None:
        out.append(f"if silent : {silent['described']}")
    elif silent.get("why"):
        out.append(f"dialog    : none ({silent['why']})")
        if silent.get("to_queue"):
            out.append(f"if silent : to queue after the role question, {silent['to_queue']:.1f} s")
    return "\n".join(out)


def _rules_check(args: argparse.Namespace, config: Config) -> int:
    from caller_id.catalogue import load_catalogue
    from queues.rules import QueuesNotChecked, load_asterisk_queues, load_rules, queues_conf_path

    path = args.file or config.rules_file
    queues_file = args.queues_conf if args.queues_conf is not None else queues_conf_path()
    queues = None
    if queues_file is None:
        print("note: the queues were not checked against Asterisk's queues.conf (IVR_QUEUES_CONF is empty)",
              file=sys.stderr)
    else:
        try:
            queues = load_asterisk_queues(queues_file)
        except QueuesNotChecked as why:
            print(f"warning: the queues were not checked against Asterisk's queues.conf ({why}); "
                  "name the file with --queues-conf FILE or IVR_QUEUES_CONF", file=sys.stderr)
    # As the server loads them: with the configured lines and the catalogue's intents.
    intents = load_catalogue(config.intents_file).names
    rules = load_rules(path, lines=[line.name for line in config.lines], intents=intents, queues=queues)
    print(f"{path}: {len(rules.rules)} rules, queues: {', '.join(sorted(rules.queues))}")
    if queues is not None:
        print(f"  every queue is defined in {queues.source}")
    return 0


def _simulate(args: argparse.Namespace, config: Config) -> int:
    from ivr.sim.fastagi_caller import mixed_scripts, run_closed_loop, run_open_loop, summarize
    from queues.variables import CUSTOMER_ID, INTENT, PRIORITY, QUEUE

    host = args.host or (config.agi.host if config.agi.host not in ("0.0.0.0", "::") else "127.0.0.1")
    port = args.port or config.agi.port
    numbers = list(args.number)
    if args.numbers:
        numbers += [n.strip() for n in args.numbers.read_text(encoding="utf-8").splitlines() if n.strip()]
    if not numbers:
        numbers = asyncio.run(_sample_numbers(config))
    scripts = mixed_scripts(
        numbers, args.calls, lines=args.line or [line.name for line in config.lines],
        dtmf=args.dtmf, hangup_rate=args.hangup_rate, garbage_rate=args.garbage_rate, seed=args.seed,
    )

    async def go() -> tuple[list[Any], float]:
        started = time.perf_counter()
        if args.rate:
            results = await run_open_loop(host, port, scripts, args.rate, fast=args.fast)
        else:
            results = await run_closed_loop(host, port, scripts, args.concurrency, fast=args.fast)
        return results, time.perf_counter() - started

    results, wall = asyncio.run(go())
    if args.verbose:
        for r in results:
            v = r.variables
            print(f"{r.script.number!r:>32} {r.script.line or '-':8} -> queue {v.get(QUEUE, '-'):12} "
                  f"prio {v.get(PRIORITY, '-'):>3} intent {v.get(INTENT, '-'):24} "
                  f"customer {v.get(CUSTOMER_ID, '-'):>8} "
                  f"{'%.1f ms' % (r.routed_after * 1000) if r.routed_after else ''}"
                  f"{' hung up' if r.hung_up else ''}{' ERROR ' + r.error if r.error else ''}")
    summary = summarize(results, wall)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        lat = summary["latency_ms"]
        print(f"{summary['calls']} calls in {summary['wall_seconds']} s ({summary['calls_per_second']}/s): "
              f"{summary['routed']} routed, {summary['hung_up']} hung up, {summary['errors']} errors")
        print(f"connect -> routed: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
        print("queues: " + ", ".join(f"{q} {n}" for q, n in summary["queues"].items()))
    return 0 if summary["errors"] == 0 else 1


async def _sample_numbers(config: Config, limit: int = 2000) -> list[str]:
    """Numbers from the configured CRM, so simulated calls find customers."""
    from sqlalchemy import select

    from caller_id.models import PhoneNumber

    async with _database(config, migrate=False) as db:
        try:
            async with db.session() as session:
                rows = await session.scalars(select(PhoneNumber.e164).limit(limit))
                return list(rows)
        except Exception:  # noqa: BLE001 - no database: simulate with a fixed number
            return []
