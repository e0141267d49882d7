"""The `ivr` command, run as an administrator runs it: a real process.

Every command runs as a subprocess of the installed console script with
IVR_CONFIG pointing at a copy of the shipped configuration in a temporary
"site" directory (its own CRM, seeded by `ivr db seed`, its own prompts);
nothing here reads or writes the repository's var/ directory.  Independent
commands run a few at a time to keep the module quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from caller_id.importer import _FIELDS as IMPORT_FIELDS
from caller_id.importer import CASE_STATUSES
from caller_id.seed import SHOWCASE
from queues.rules import SHIPPED_QUEUES_CONF
from tests.servers import free_port

PROJECT = Path(__file__).resolve().parents[2]
SAMPLES = PROJECT / "tests" / "caller_id" / "data"
_SCRIPT = Path(sys.executable).with_name("ivr")
IVR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ivr.cli"]
TIMEOUT = 60.0  # seconds; only so that a hanging command fails the test
PARALLEL = 4
SQLITE = "sqlite+aiosqlite:///"

# The Asterisk queues the shipped routing.yaml sends calls to.
SHIPPED_QUEUES = {"vip", "key_accounts", "b2b", "b2c", "support", "english", "after_hours"}

# Only the dialled line decides here, so the test does not depend on the time of day
# (the shipped rules send everyone to after_hours at night).
LINE_RULES = """\
rules:
  - name: b2b-line
    when:
      line: b2b
    queue: b2b
    priority: 20
  - name: everyone-else
    queue: support
    priority: 5
"""

MULTI_ROLE = "+79000000005"  # private client, director of one company, employee of another
PRIVATE_C = "+79000000002"  # one role: private, segment C
VIP = "+79000000001"
NEVER_SEEDED = "+79300123456"  # valid, but the seed keeps +79300... free


@dataclass(frozen=True)
class Site:
    """A deployment in a temporary directory: config/ (copied), var/ (the CRM)."""

    root: Path
    config: Path
    crm: Path
    cwd: Path

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        env.update(IVR_CONFIG=str(self.config), IVR_PROMPTS_DIR=str(self.root / "var" / "prompts"),
                   IVR_MODEL_FILE=str(self.root / "var" / "intent-model.joblib"),
                   PYTHONUTF8="1")
        env.update(overrides)
        return env

    def ivr(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_ivr(args, self.env(**env), self.cwd)

    def ivr_together(self, commands: Sequence[tuple[Sequence[str], dict[str, str]]]) -> list[
            subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(lambda c: run_ivr(c[0], self.env(**c[1]), self.cwd), commands))


def run_ivr(args: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IVR, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", timeout=TIMEOUT, check=False)


def sqlite_url(path: Path) -> str:
    return f"{SQLITE}{path}"


def query(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def count(path: Path, table: str) -> int:
    return query(path, f"SELECT count(*) FROM {table}")[0][0]


def line_number(text: str, needle: str) -> int:
    """The editor line (1-based) of the first line containing `needle`."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not found")


@pytest.fixture(scope="module")
def bare_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The site before its CRM exists (`site` is the same, seeded by `ivr db seed`)."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(PROJECT / "config", root / "config")
    (root / "var").mkdir()
    crm = root / "var" / "crm.sqlite3"
    config = root / "config" / "ivr.yaml"
    # Relative, as shipped: resolved against config/, wherever the command runs.
    text, replaced = re.subn(r"(?m)^database_url:.*$", "database_url: sqlite+aiosqlite:///../var/crm.sqlite3",
                             config.read_text(encoding="utf-8"))
    assert replaced == 1
    # The shipped 0.15 s lookup budget fails open to "unknown caller" on a busy test machine;
    # these tests are about what the command shows, not about that budget.
    text, replaced = re.subn(r"(?m)^(lookup:\n  timeout:) [0-9.]+", r"\1 10.0", text)
    assert replaced == 1
    config.write_text(text, encoding="utf-8")
    # The same site with rules that look only at the dialled line.
    shutil.copytree(root / "config", root / "line-rules")
    (root / "line-rules" / "routing.yaml").write_text(LINE_RULES, encoding="utf-8")
    cwd = root / "somewhere" / "else"  # ../var from here is not the CRM
    cwd.mkdir(parents=True)
    return Site(root=root, config=config, crm=crm, cwd=cwd)


def lookup_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)  # the whole output is one JSON object
    assert isinstance(decision, dict)
    return decision


# -- help -----------------------------------------------------------------------


def test_help_lists_the_commands(site: Site) -> None:
    top, db = site.ivr_together([(["--help"], {}), (["db", "--help"], {})])
    assert top.returncode == 0, top.stderr
    for command in ("run", "db", "lookup", "rules", "simulate"):
        assert re.search(rf"^\s+{command}\s", top.stdout, re.MULTILINE), f"{command} missing from --help"
    assert db.returncode == 0, db.stderr
    for action in ("init", "seed", "import"):
        assert re.search(rf"^\s+{action}\s", db.stdout, re.MULTILINE), f"{action} missing from db --help"


def test_every_option_of_every_command_has_help() -> None:
    """`--help` explains each option (simulate's --calls and --seed among them)."""
    import argparse

    from ivr.cli import _parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.option_strings and not isinstance(action, argparse._HelpAction):
                yield path, action

    seen = set()
    for path, action in walk(_parser(), "ivr"):
        assert action.help and action.help != argparse.SUPPRESS, f"{path} {action.option_strings[0]} has no help"
        seen.add((path, action.option_strings[0]))
    assert {("ivr simulate", "--calls"), ("ivr simulate", "--seed"), ("ivr rules", "--queues-conf")} <= seen


def test_simulate_help_explains_calls_and_seed(site: Site) -> None:
    result = site.ivr("simulate", "--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"--calls CALLS\s+how many calls to place", result.stdout)
    assert re.search(r"--seed SEED\s+seed of the random mix", result.stdout)


# -- ivr db init / seed -----------------------------------------------------------


def test_db_init_creates_the_schema(site: Site, tmp_path: Path) -> None:
    database = tmp_path / "new.sqlite3"
    first = site.ivr("db", "init", IVR_DATABASE_URL=sqlite_url(database))
    assert first.returncode == 0, first.stderr
    assert "database ready" in first.stdout and str(database) in first.stdout
    tables = {name for (name,) in query(database, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"customers", "phone_numbers", "number_roles", "organisations", "agents", "cases",
            "alembic_version"} <= tables
    assert len(query(database, "SELECT version_num FROM alembic_version")) == 1
    assert count(database, "customers") == 0


@dataclass(frozen=True)
class Seeded:
    first: Path  # --seed 5: the site's own CRM, found through the configuration
    second: Path  # --seed 5 again, another file
    other: Path  # --seed 6
    outputs: list[subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def cli_seeded(bare_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Three databases seeded by `ivr db seed --customers 300`, side by side."""
    directory = tmp_path_factory.mktemp("seeded-by-cli")
    second, other = directory / "second.sqlite3", directory / "other.sqlite3"
    outputs = bare_site.ivr_together([
        (["db", "seed", "--customers", "300", "--seed", "5"], {}),
        (["db", "seed", "--customers", "300", "--seed", "5"], {"IVR_DATABASE_URL": sqlite_url(second)}),
        (["db", "seed", "--customers", "300", "--seed", "6"], {"IVR_DATABASE_URL": sqlite_url(other)}),
    ])
    return Seeded(bare_site.crm, second, other, outputs=outputs)


@pytest.fixture(scope="module")
def site(bare_site: Site, cli_seeded: Seeded) -> Site:
    """The site with its CRM seeded: 300 customers, the showcase callers first."""
    assert all(result.returncode == 0 for result in cli_seeded.outputs), [r.stderr for r in cli_seeded.outputs]
    return bare_site


def _people(path: Path) -> dict[str, list[tuple]]:
    return {
        "customers": query(path, "SELECT id, name, segment, is_vip, language, manager_id FROM customers ORDER BY id"),
        "numbers": query(path, "SELECT id, e164 FROM phone_numbers ORDER BY id"),
        "roles": query(path, "SELECT number_id, customer_id, kind, organisation_id FROM number_roles ORDER BY id"),
        "organisations": query(path, "SELECT id, name, inn, segment FROM organisations ORDER BY id"),
        "cases": query(path, "SELECT id, customer_id, product, status, priority FROM cases ORDER BY id"),
    }


def test_db_seed_fills_the_database_and_says_what_it_wrote(cli_seeded: Seeded) -> None:
    for result in cli_seeded.outputs:
        assert result.returncode == 0, result.stderr
        assert "seeded" in result.stdout and "customers=300" in result.stdout
    assert count(cli_seeded.first, "customers") == 300
    # The configured relative database_url was taken from config/, not from the working directory.
    assert not (cli_seeded.first.parents[1] / "somewhere" / "var").exists()
    showcase = {number for (number,) in query(cli_seeded.first, "SELECT e164 FROM phone_numbers")}
    assert {entry["number"] for entry in SHOWCASE} <= showcase


def test_db_seed_with_the_same_seed_gives_the_same_data(cli_seeded: Seeded) -> None:
    first, second = _people(cli_seeded.first), _people(cli_seeded.second)
    for table in first:
        assert first[table] == second[table], table
    # A few concrete values, as an administrator would compare them.
    assert first["numbers"][-5:] == second["numbers"][-5:]
    assert first["customers"][-5:] == second["customers"][-5:]


def test_db_seed_with_another_seed_gives_other_generated_people(cli_seeded: Seeded) -> None:
    first, other = _people(cli_seeded.first), _people(cli_seeded.other)
    showcase = len(SHOWCASE)
    assert first["customers"][:3] == other["customers"][:3]  # the hand-picked showcase is fixed
    assert first["numbers"][showcase + 10:] != other["numbers"][showcase + 10:]
    assert first["customers"][50:] != other["customers"][50:]


def test_second_seed_into_the_same_database_is_refused_clearly(cli_seeded: Seeded, site: Site,
                                                               tmp_path: Path) -> None:
    database = tmp_path / "seeded.sqlite3"
    shutil.copy(cli_seeded.first, database)
    before = _people(database)
    result = site.ivr("db", "seed", "--customers", "300", "--seed", "5", IVR_DATABASE_URL=sqlite_url(database))
    assert result.returncode != 0
    assert "already holds CRM data" in result.stderr
    assert _people(database) == before  # nothing added
    # A refusal for the administrator, not a Python crash.
    assert "Traceback" not in result.stderr, result.stderr


# -- ivr lookup -----------------------------------------------------------------


@pytest.fixture(scope="module")
def showcase_lookups(site: Site) -> dict[str, subprocess.CompletedProcess[str]]:
    numbers = [entry["number"] for entry in SHOWCASE]
    results = site.ivr_together([(["lookup", number, "--json"], {}) for number in numbers])
    return dict(zip(numbers, results))


@pytest.mark.parametrize("number", [entry["number"] for entry in SHOWCASE])
def test_lookup_json_of_a_showcase_caller(showcase_lookups: dict, number: str) -> None:
    decision = lookup_json(showcase_lookups[number])
    assert {"number", "customer", "roles", "intents", "route"} <= decision.keys()
    assert decision["number"] == number
    assert decision["lookup"]["source"] == "crm", decision["lookup"]
    assert decision["customer"] is not None
    assert decision["customer"]["name"]
    assert decision["roles"]
    assert decision["intents"]
    for intent in decision["intents"]:
        assert {"intent", "score", "reasons"} <= intent.keys()
        assert isinstance(intent["intent"], str) and intent["intent"]
        assert isinstance(intent["score"], (int, float))
        assert isinstance(intent["reasons"], list)
        assert all(isinstance(reason, str) and reason for reason in intent["reasons"])
    scores = [intent["score"] for intent in decision["intents"]]
    assert scores == sorted(scores, reverse=True)  # best first
    route = decision["route"]
    assert isinstance(route["queue"], str) and route["queue"] in SHIPPED_QUEUES
    assert isinstance(route["priority"], int)


def test_lookup_asks_a_caller_with_several_roles_on_the_general_line(showcase_lookups: dict) -> None:
    decision = lookup_json(showcase_lookups[MULTI_ROLE])
    assert decision["line"] == "general"
    labels = [role["label"] for role in decision["roles"]]
    assert len(labels) == 3
    assert decision["question"] == labels
    assert decision["question_prompt"]
    assert decision["role"] is not None  # the call is still decided for the likeliest role


@pytest.fixture(scope="module")
def role_lookups(site: Site) -> list[subprocess.CompletedProcess[str]]:
    return site.ivr_together([
        (["lookup", MULTI_ROLE, "--json", "--role", "1"], {}),
        (["lookup", MULTI_ROLE, "--json", "--role", "2"], {}),
        (["lookup", MULTI_ROLE, "--json", "--role", "4"], {}),
    ])


def test_lookup_role_option_answers_the_question(showcase_lookups: dict, role_lookups: list) -> None:
    asked = lookup_json(showcase_lookups[MULTI_ROLE])["question"]
    first, second, wrong = role_lookups
    as_first, as_second = lookup_json(first), lookup_json(second)
    assert as_first["role"]["label"] == asked[0]
    assert as_second["role"]["label"] == asked[1]
    assert as_first["role"] != as_second["role"]
    assert wrong.returncode != 0
    assert "--role must be 1..3" in wrong.stderr


def test_lookup_with_a_role_still_reports_the_question_it_answers(showcase_lookups: dict,
                                                                 role_lookups: list) -> None:
    asked = lookup_json(showcase_lookups[MULTI_ROLE])["question"]
    answered = lookup_json(role_lookups[1])
    assert answered["question_prompt"]  # the prompt is there ...
    assert answered["question"] == asked  # ... and so must be the roles it offered


def test_lookup_asks_only_about_the_roles_the_line_is_for(site: Site) -> None:
    b2b, b2c = site.ivr_together([
        (["lookup", MULTI_ROLE, "--json", "--line", "b2b"], {}),
        (["lookup", MULTI_ROLE, "--json", "--line", "b2c"], {}),
    ])
    on_b2b, on_b2c = lookup_json(b2b), lookup_json(b2c)
    assert on_b2b["line"] == "b2b"
    assert sorted(role["kind"] for role in on_b2b["roles"] if role["label"] in on_b2b["question"]) == [
        "director", "employee"]
    assert on_b2c["line"] == "b2c"
    assert on_b2c["question"] == []
    assert on_b2c["role"]["kind"] == "private"


def test_lookup_line_option_changes_the_route(site: Site) -> None:
    config = str(site.root / "line-rules" / "ivr.yaml")
    general, by_name, by_number = site.ivr_together([
        (["lookup", PRIVATE_C, "--json"], {"IVR_CONFIG": config}),
        (["lookup", PRIVATE_C, "--json", "--line", "b2b"], {"IVR_CONFIG": config}),
        (["lookup", PRIVATE_C, "--json", "--line", "+74955550200"], {"IVR_CONFIG": config}),
    ])
    assert lookup_json(general)["route"]["queue"] == "support"
    for result in (by_name, by_number):
        decision = lookup_json(result)
        assert decision["line"] == "b2b"
        assert decision["route"]["queue"] == "b2b"
        assert decision["route"]["rule"] == "b2b-line"
        assert decision["customer"]["name"] == lookup_json(general)["customer"]["name"]


GARBAGE = {
    "unknown": "unknown",
    "anonymous": "anonymous",
    "empty": "",
    "sql-injection": "'; DROP TABLE customers;--",
    "forty-digits": "1" * 40,
    "cyrillic-text": "Иван Петрович",
    "valid-but-not-in-crm": NEVER_SEEDED,
}


@pytest.fixture(scope="module")
def garbage_lookups(site: Site) -> dict[str, subprocess.CompletedProcess[str]]:
    assert not query(site.crm, f"SELECT 1 FROM phone_numbers WHERE e164 = '{NEVER_SEEDED}'")
    results = site.ivr_together([(["lookup", number, "--json"], {}) for number in GARBAGE.values()])
    return dict(zip(GARBAGE, results))


@pytest.mark.parametrize("name", GARBAGE)
def test_lookup_of_an_unknown_or_garbage_number_still_routes(garbage_lookups: dict, name: str) -> None:
    decision = lookup_json(garbage_lookups[name])
    assert decision["customer"] is None
    assert decision["roles"] == []
    assert isinstance(decision["route"]["queue"], str) and decision["route"]["queue"] in SHIPPED_QUEUES
    assert isinstance(decision["route"]["priority"], int)


def test_garbage_lookups_leave_the_crm_intact(garbage_lookups: dict, site: Site) -> None:
    assert all(result.returncode == 0 for result in garbage_lookups.values())
    assert count(site.crm, "customers") > len(SHOWCASE)


def test_lookup_human_output_shows_queue_and_reasons(site: Site, showcase_lookups: dict) -> None:
    decision = lookup_json(showcase_lookups[VIP])
    result = site.ivr("lookup", VIP)
    assert result.returncode == 0, result.stderr
    assert decision["customer"]["name"] in result.stdout
    route = decision["route"]
    assert f"queue {route['queue']}, priority {route['priority']}" in result.stdout
    for intent in decision["intents"]:
        assert intent["intent"] in result.stdout
        for reason in intent["reasons"]:
            assert reason in result.stdout


def test_lookup_refuses_an_unknown_line_and_lists_the_lines(site: Site) -> None:
    unknown, near = site.ivr_together([
        (["lookup", VIP, "--line", "nosuch"], {}),
        (["lookup", VIP, "--line", "b2", "--json"], {}),
    ])
    for result in (unknown, near):
        assert result.returncode == 2
        assert result.stdout == ""  # no decision for a line that does not exist
        assert "Traceback" not in result.stderr
        assert (f"the lines of {site.config} are: general (+74955550100), b2b (+74955550200), "
                "b2c (+74955550300)") in result.stderr
    assert "unknown line 'nosuch';" in unknown.stderr
    assert "unknown line 'b2'; did you mean 'b2c'?" in near.stderr


@pytest.mark.parametrize("name, says", [
    ("anonymous", ["number    : withheld (caller ID 'anonymous')",
                   "customer  : unknown caller (the number is withheld: the CRM was not asked)"]),
    ("empty", ["number    : withheld (caller ID '')", "the number is withheld"]),
    ("forty-digits", ["no usable number (caller ID '1111", "the caller ID is not a phone number"]),
    ("valid-but-not-in-crm", [f"number    : {NEVER_SEEDED}", "unknown caller (the number is not in the CRM)"]),
])
def test_lookup_explains_why_the_caller_is_unknown(site: Site, garbage_lookups: dict, name: str,
                                                   says: list[str]) -> None:
    result = site.ivr("lookup", GARBAGE[name])
    assert result.returncode == 0, result.stderr
    for text in says:
        assert text in result.stdout
    if name != "valid-but-not-in-crm":
        assert "not in the CRM" not in result.stdout.split("intents")[0]  # the header does not say so
    decision = lookup_json(garbage_lookups[name])
    assert decision["caller_id"] == GARBAGE[name]
    assert decision["number_withheld"] is (name in ("anonymous", "empty"))


# -- ivr db import ----------------------------------------------------------------


def test_db_import_of_the_sample_files(site: Site, tmp_path: Path) -> None:
    from_csv, from_jsonl = tmp_path / "csv.sqlite3", tmp_path / "jsonl.sqlite3"
    csv_result, jsonl_result = site.ivr_together([
        (["db", "import", str(SAMPLES / "crm_sample.csv")], {"IVR_DATABASE_URL": sqlite_url(from_csv)}),
        (["db", "import", str(SAMPLES / "crm_sample.jsonl")], {"IVR_DATABASE_URL": sqlite_url(from_jsonl)}),
    ])
    for result, sample in ((csv_result, "crm_sample.csv"), (jsonl_result, "crm_sample.jsonl")):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"imported {SAMPLES / sample}: ")
        for part in ("2 agent rows (2 new", "2 organisation rows (2 new", "3 customer rows (3 new",
                     "5 number rows (5 new", "3 case rows (3 new"):
            assert part in result.stdout
    for database in (from_csv, from_jsonl):
        assert {number for (number,) in query(database, "SELECT e164 FROM phone_numbers")} == {
            "+79161234567", "+442079460958", "+74951234567"}
        assert count(database, "cases") == 3
    # The imported caller is found by the number as a person would type it.
    found = lookup_json(site.ivr("lookup", "8 (916) 123-45-67", "--json", IVR_DATABASE_URL=sqlite_url(from_csv)))
    assert found["number"] == "+79161234567"
    assert found["customer"]["name"] == "Петров Иван Сергеевич"
    assert "employee of ООО «Ромашка»" in [role["label"] for role in found["roles"]]


def _broken_csv(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    lines = (SAMPLES / "crm_sample.csv").read_text(encoding="utf-8").split("\n")
    bad_number = line_number("\n".join(lines), "+44 20 7946 0958")
    lines[bad_number - 1] = lines[bad_number - 1].replace("+44 20 7946 0958", "+44 20 79")
    # The last case comes after a quoted note over two lines: counted as an editor counts.
    bad_priority = line_number("\n".join(lines), "case,,,,,,,,,,T-3,")
    assert bad_priority == 17
    lines[bad_priority - 1] = lines[bad_priority - 1].replace(",in_progress,3,", ",in_progress,9,")
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, {bad_number: "not a valid phone number", bad_priority: "priority"}


def test_db_import_with_bad_rows_names_them_and_imports_nothing(site: Site, tmp_path: Path) -> None:
    path, errors = _broken_csv(tmp_path)
    database = tmp_path / "crm.sqlite3"
    result = site.ivr("db", "import", str(path), IVR_DATABASE_URL=sqlite_url(database))
    assert result.returncode != 0
    assert result.stderr.count("nothing imported") == 1, result.stderr
    assert result.stderr.startswith(f"{path}: 2 bad rows, nothing imported\n")
    for line, reason in errors.items():
        assert re.search(rf"line {line}: .*{re.escape(reason)}", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    for table in ("agents", "organisations", "customers", "phone_numbers", "number_roles", "cases"):
        assert count(database, table) == 0, table


def test_db_import_of_oversized_and_over_deep_rows_names_them_without_a_traceback(site: Site, tmp_path: Path) -> None:
    csv_file = tmp_path / "huge.csv"
    csv_file.write_text("kind,id,name,notes\ncustomer,C-1,Анна,\ncustomer,C-2,Олег," + "x" * 1_048_576 + "\n",
                        encoding="utf-8")
    jsonl_file = tmp_path / "deep.jsonl"
    jsonl_file.write_text('{"kind": "customer", "id": "C-1", "name": "Анна"}\n' + "[" * 100_000 + "]" * 100_000
                          + "\n", encoding="utf-8")
    database = tmp_path / "crm.sqlite3"
    big, deep = site.ivr_together([(["db", "import", str(path)], {"IVR_DATABASE_URL": sqlite_url(database)})
                                   for path in (csv_file, jsonl_file)])
    for result, line, reason in ((big, 3, "field larger than field limit"), (deep, 2, "JSON nested too deeply")):
        assert result.returncode == 1 and "nothing imported" in result.stderr
        assert re.search(rf"line {line}: .*{re.escape(reason)}", result.stderr), result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr) < 2000
    assert count(database, "customers") == 0


def test_db_import_refuses_unknown_statuses_and_languages_by_row(site: Site, tmp_path: Path) -> None:
    csv_file = tmp_path / "crm.csv"
    csv_file.write_text(
        "kind,id,name,language,customer,product,title,status\n"
        "customer,C-1,Анна,xx,,,,\n"          # line 2: no such language
        "customer,C-2,Jane,EN,,,,\n"          # fine: codes are read in lower case
        "customer,C-3,Олег,rus,,,,\n"         # line 4: three letters
        "case,T-1,,,C-1,card,Карта,in_progres\n"  # line 5: a misspelt status
        "case,T-2,,,C-2,card,Карта,on_hold\n"     # line 6: a status the server does not know
        "case,T-3,,,C-2,card,Карта,blocked\n",    # fine: the catalogue's card_blocked matches on it
        encoding="utf-8")
    jsonl_file = tmp_path / "crm.jsonl"
    jsonl_file.write_text('{"kind": "customer", "id": "C-1", "name": "Анна", "language": "zz"}\n'
                          '{"kind": "case", "id": "T-1", "customer": "C-1", "product": "card", "title": "Карта", '
                          '"status": "waiting"}\n', encoding="utf-8")
    database = tmp_path / "crm.sqlite3"
    from_csv, from_jsonl = site.ivr_together([(["db", "import", str(path)], {"IVR_DATABASE_URL": sqlite_url(database)})
                                              for path in (csv_file, jsonl_file)])
    assert from_csv.returncode == 1 and from_jsonl.returncode == 1
    assert from_csv.stderr.startswith(f"{csv_file}: 4 bad rows, nothing imported\n"), from_csv.stderr
    assert "line 2: language 'xx' is not an ISO 639-1 language code" in from_csv.stderr
    assert "line 4: language 'rus' is not an ISO 639-1 language code" in from_csv.stderr
    assert "line 5: status 'in_progres' is not a known case status (did you mean 'in_progress'?)" in from_csv.stderr
    assert re.search(r"line 6: status 'on_hold' is not a known case status; known: new, in_progress, .*cancelled",
                     from_csv.stderr)
    assert not re.search(r"line [37]:", from_csv.stderr)
    assert from_jsonl.stderr.startswith(f"{jsonl_file}: 2 bad rows, nothing imported\n"), from_jsonl.stderr
    assert "line 1: language 'zz'" in from_jsonl.stderr and "line 2: status 'waiting'" in from_jsonl.stderr
    for result in (from_csv, from_jsonl):
        assert result.stderr.count("nothing imported") == 1 and "Traceback" not in result.stderr
    assert count(database, "customers") == 0 and count(database, "cases") == 0


def test_db_import_of_a_missing_or_unsupported_file_says_nothing_was_imported(site: Site, tmp_path: Path) -> None:
    text_file = tmp_path / "crm.txt"
    text_file.write_text("kind\n", encoding="utf-8")
    missing, unsupported = site.ivr_together([(["db", "import", str(tmp_path / "absent.csv")], {}),
                                              (["db", "import", str(text_file)], {})])
    assert missing.returncode == 1
    assert missing.stderr == f"{tmp_path / 'absent.csv'}: No such file or directory; nothing imported\n"
    assert unsupported.returncode == 1
    assert unsupported.stderr == (f"{text_file}: unsupported file type '.txt'; use .csv, .jsonl or .ndjson; "
                                  "nothing imported\n")


def test_db_import_help_describes_the_file_format(site: Site) -> None:
    result = site.ivr("db", "import", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "CSV" in text and "JSON lines" in text and ".jsonl" in text and "header" in text
    table = text[text.index("fields (* required)"):]
    for kind, fields in IMPORT_FIELDS.items():
        row = re.search(rf"^  {kind} +(.+(?:\n {{4,}}\S.*)*)", table, re.MULTILINE)
        assert row, kind
        listed = [name.strip().rstrip("*") for name in row.group(1).replace("\n", " ").split(",")]
        assert listed == list(fields), kind
    assert "id*, name*" in table and "status*" in table
    for status in CASE_STATUSES:
        assert status in text
    assert "ISO 639-1" in text


# -- ivr rules ------------------------------------------------------------------


def test_rules_checks_the_shipped_file(site: Site) -> None:
    result = site.ivr("rules")
    assert result.returncode == 0, result.stderr
    rules_file = site.config.parent / "routing.yaml"
    summary, checked = result.stdout.splitlines()
    match = re.fullmatch(rf"{re.escape(str(rules_file))}: (\d+) rules, queues: (.+)", summary)
    assert match, result.stdout
    assert int(match.group(1)) > 0
    assert set(match.group(2).split(", ")) == SHIPPED_QUEUES
    # The site has no asterisk_conf/ of its own: the shipped queues.conf is the default.
    assert checked == f"  every queue is defined in {SHIPPED_QUEUES_CONF}"
    assert result.stderr == ""


def test_rules_refuses_a_queue_asterisk_does_not_define(site: Site, tmp_path: Path) -> None:
    shipped = (site.config.parent / "routing.yaml").read_text(encoding="utf-8")
    typo = tmp_path / "typo.yaml"
    typo.write_text(re.sub(r"(?m)^(\s+queue:) vip$", r"\1 vipp", shipped, count=1), encoding="utf-8")
    typo_line = line_number(typo.read_text(encoding="utf-8"), "queue: vipp")
    # The operator's queues.conf names the queue differently: the check follows it, not the shipped one.
    operator = tmp_path / "etc-asterisk" / "queues.conf"
    operator.parent.mkdir()
    operator.write_text(SHIPPED_QUEUES_CONF.read_text(encoding="utf-8").replace("[vip](cc-queue)", "[vipp](cc-queue)"),
                        encoding="utf-8")
    by_default, by_option, by_environment, shipped_against_operator = site.ivr_together([
        (["rules", str(typo)], {}),
        (["rules", str(typo), "--queues-conf", str(operator)], {}),
        (["rules", str(typo)], {"IVR_QUEUES_CONF": str(operator)}),
        (["rules"], {"IVR_QUEUES_CONF": str(operator)}),
    ])
    assert by_default.returncode == 2 and by_default.stdout == ""
    assert (f"{typo}, line {typo_line}: queue 'vipp' is not defined in {SHIPPED_QUEUES_CONF}; "
            "did you mean 'vip'?") in by_default.stderr
    assert "Traceback" not in by_default.stderr
    for result in (by_option, by_environment):
        assert result.returncode == 0, result.stderr
        assert f"  every queue is defined in {operator}" in result.stdout
    assert shipped_against_operator.returncode == 2
    assert f"queue 'vip' is not defined in {operator}; did you mean 'vipp'?" in shipped_against_operator.stderr


def test_rules_without_a_queues_conf_says_so_and_checks_the_rest(site: Site, tmp_path: Path) -> None:
    absent = tmp_path / "nowhere" / "queues.conf"
    broken = tmp_path / "broken.conf"
    broken.write_text("[general]\n[vip\n", encoding="utf-8")
    missing, switched_off, unreadable = site.ivr_together([
        (["rules", "--queues-conf", str(absent)], {}),
        (["rules"], {"IVR_QUEUES_CONF": ""}),
        (["rules", "--queues-conf", str(broken)], {}),
    ])
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout.count("\n") == 1 and "rules, queues:" in missing.stdout  # no "every queue is defined"
    assert f"warning: the queues were not checked against Asterisk's queues.conf ({absent}: not found)" in (
        missing.stderr)
    assert switched_off.returncode == 0 and "IVR_QUEUES_CONF is empty" in switched_off.stderr
    assert unreadable.returncode == 2
    assert f"{broken}, line 2: malformed section header '[vip'" in unreadable.stderr


def test_run_refuses_to_start_with_a_queue_asterisk_does_not_define(site: Site, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(site.config.parent, config_dir)
    rules = config_dir / "routing.yaml"
    rules.write_text(re.sub(r"(?m)^(\s+queue:) vip$", r"\1 vipp", rules.read_text(encoding="utf-8"), count=1),
                     encoding="utf-8")
    line = line_number(rules.read_text(encoding="utf-8"), "queue: vipp")
    result = site.ivr("run", IVR_CONFIG=str(config_dir / "ivr.yaml"), IVR_AGI_PORT=str(free_port()),
                      IVR_WEB_PORT=str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"configuration error: {rules}, line {line}: queue 'vipp' is not defined" in result.stderr
    assert "is running" not in result.stdout


def test_rules_on_a_broken_file_names_the_file_and_line(site: Site, tmp_path: Path) -> None:
    shipped = (site.config.parent / "routing.yaml").read_text(encoding="utf-8")
    typo_line = line_number(shipped, "segment: [A, B]")
    typo = tmp_path / "typo.yaml"
    typo.write_text(shipped.replace("segment: [A, B]", "segmnt: [A, B]", 1), encoding="utf-8")
    date_line = line_number(shipped, "2026-12-31")
    bad_date = tmp_path / "date.yaml"
    bad_date.write_text(shipped.replace("2026-12-31", "2026-02-30", 1), encoding="utf-8")

    typo_result, date_result = site.ivr_together([(["rules", str(typo)], {}), (["rules", str(bad_date)], {})])
    assert typo_result.returncode == 2
    assert f"{typo}, line {typo_line}:" in typo_result.stderr
    assert "segmnt" in typo_result.stderr
    assert date_result.returncode == 2
    assert f"{bad_date}, line {date_line}:" in date_result.stderr
    assert typo_result.stdout == date_result.stdout == ""


# -- a broken configuration stops every command -----------------------------------


def test_broken_config_stops_every_command_with_file_and_line(site: Site, tmp_path: Path) -> None:
    text = site.config.read_text(encoding="utf-8")
    line = line_number(text, "  port: 4573")
    broken = tmp_path / "ivr.yaml"
    broken.write_text(text.replace("  port: 4573", "  prot: 4573", 1), encoding="utf-8")
    commands = [["lookup", VIP], ["db", "seed", "--customers", "30"], ["run"]]
    runs = [(command, {"IVR_CONFIG": str(broken)}) for command in commands]
    runs.append((["--config", str(broken), "simulate", "--calls", "1"], {}))  # --config wins over IVR_CONFIG
    before = _people(site.crm)
    for (command, _), result in zip(runs, site.ivr_together(runs)):
        assert result.returncode == 2, (command, result.stderr)
        assert f"{broken}, line {line}:" in result.stderr, (command, result.stderr)
        assert "'prot'" in result.stderr and "did you mean 'port'" in result.stderr
        assert "Traceback" not in result.stderr
    assert _people(site.crm) == before


# -- ivr run + ivr simulate --------------------------------------------------------


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"ivr run exited with {server.returncode}:\n{log.read_text(encoding='utf-8')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"ivr run did not listen on {port} within {limit} s")


def test_simulate_against_a_running_server(site: Site, tmp_path: Path) -> None:
    crm = tmp_path / "crm.sqlite3"  # the server records calls: a copy of the site's CRM
    shutil.copy(site.crm, crm)
    port = free_port()
    env = site.env(IVR_AGI_PORT=str(port), IVR_DATABASE_URL=sqlite_url(crm),
                   IVR_PROMPTS_DIR=str(tmp_path / "prompts"), IVR_WEB_PORT=str(free_port()),
                   IVR_MODEL_FILE=str(tmp_path / "intent-model.joblib"))
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with out.open("w", encoding="utf-8") as stdout, err.open("w", encoding="utf-8") as stderr:
        server = subprocess.Popen([*IVR, "run"], env=env, cwd=site.cwd, stdout=stdout, stderr=stderr)
    try:
        _wait_for_port(port, server, err)
        result = run_ivr(["simulate", "--calls", "30", "--concurrency", "5", "--fast", "--json"], env, site.cwd)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail("ivr run did not stop on SIGINT")

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["calls"] == 30
    assert summary["errors"] == 0
    assert summary["routed"] == 30
    assert summary["queues"] and sum(summary["queues"].values()) == 30
    # A call whose decision ran out of time fails open to the dialplan's default.
    assert set(summary["queues"]) <= SHIPPED_QUEUES | {"(dialplan default)"}
    assert set(summary["queues"]) & SHIPPED_QUEUES

    assert server.returncode == 0, err.read_text(encoding="utf-8")
    started = out.read_text(encoding="utf-8")
    assert "FastAGI" in started and f":{port}/inbound" in started
    assert "database" in started and str(crm) in started
    assert "AMI" in started
    assert "shutting down" in started
    closing = started.strip().splitlines()[-1]
    assert re.fullmatch(r"stopped after 30 calls in 0:\d\d:\d\d \((\d+ [a-z -]+(, )?)+\)", closing), closing
    counts = dict((word, int(number)) for number, word in re.findall(r"(\d+) ([a-z -]+?)(?:,|\))", closing))
    assert sum(counts.values()) == 30 and set(counts) <= {"routed", "self-served", "failed open", "hung up"}


# -- ivr user add -----------------------------------------------------------------


def test_user_add_creates_logins_and_refuses_mistakes(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("a long enough password\n", encoding="utf-8")
    agent = site.ivr("user", "add", "anna", "--role", "agent", "--agent-interface", "PJSIP/1001",
                     "--password-file", str(secret))
    assert agent.returncode == 0, agent.stderr
    assert "user 'anna' (agent) created" in agent.stdout
    piped = subprocess.run([*IVR, "user", "add", "boss", "--role", "supervisor"], env=site.env(), cwd=site.cwd,
                           input="from standard input\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert piped.returncode == 0, piped.stderr
    rows = dict(query(site.crm, "SELECT username, role FROM users"))
    assert rows["anna"] == "agent" and rows["boss"] == "supervisor"
    assert query(site.crm, "SELECT agent_id FROM users WHERE username = 'anna'")[0][0] is not None
    hashes = [h for (h,) in query(site.crm, "SELECT password_hash FROM users")]
    assert all(h.startswith("scrypt$") and "password" not in h for h in hashes)

    again, unknown, short = site.ivr_together([
        (["user", "add", "anna", "--role", "admin", "--password-file", str(secret)], {}),
        (["user", "add", "igor", "--role", "agent", "--agent-interface", "PJSIP/9999",
          "--password-file", str(secret)], {}),
        (["user", "add", "kim", "--role", "admin", "--password-file", str(tmp_path / "missing")], {}),
    ])
    assert again.returncode == 1 and "exists already" in again.stderr
    assert unknown.returncode == 1 and "no agent with interface 'PJSIP/9999'" in unknown.stderr
    assert short.returncode == 1 and "cannot read" in short.stderr


def test_user_add_logs_no_hash_or_password_even_at_debug(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("debug-level secret password\n", encoding="utf-8")
    result = site.ivr("user", "add", "debugged", "--role", "supervisor", "--password-file", str(secret),
                      IVR_LOG_LEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    stored = query(site.crm, "SELECT password_hash FROM users WHERE username = 'debugged'")[0][0]
    output = result.stdout + result.stderr
    assert "DEBUG" in output  # the level was on
    for secret_part in (stored, stored.split("$")[-1], stored.split("$")[-2], "debug-level secret password"):
        assert secret_part not in output


def _on_a_terminal(args: Sequence[str], env: dict[str, str], cwd: Path, typed: Sequence[str]) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its controlling terminal (getpass reads /dev/tty),
    typing each of `typed` after the next prompt; its exit code and everything it wrote."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout, stderr and /dev/tty
        try:
            os.chdir(cwd)
            os.execve(IVR[0], [*IVR, *args], env)
        finally:
            os._exit(127)
    seen, pending, answered = b"", list(typed), 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no answer from {args}: {seen!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.endswith(b": ") and seen.count(b": ") > answered:  # each prompt once
                os.write(fd, pending.pop(0).encode() + b"\n")
                answered += 1
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # a broken test: do not wait for ever
            time.sleep(1)
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode("utf-8", errors="replace")


def test_user_add_asks_for_the_password_twice_on_a_terminal(site: Site) -> None:
    env = {k: v for k, v in site.env().items() if k != "IVR_CONFIG"}  # --config after the command instead
    args = ["user", "add", "--config", str(site.config), "tess", "--role", "admin"]
    code, shown = _on_a_terminal(args, env, site.cwd, ["typed on a terminal", "typed on a terminal"])
    assert code == 0, shown
    assert "Password: " in shown and "Password again: " in shown
    assert "typed on a terminal" not in shown  # no echo
    assert "user 'tess' (admin) created" in shown
    from ivr.web.auth import verify_password

    stored = query(site.crm, "SELECT password_hash, role FROM users WHERE username = 'tess'")
    assert stored and stored[0][1] == "admin" and verify_password("typed on a terminal", stored[0][0])

    code, shown = _on_a_terminal([*args[:4], "tess2", "--role", "admin"], env, site.cwd,
                                 ["typed on a terminal", "typed differently"])
    assert code == 1 and "the two passwords differ" in shown, shown
    assert not query(site.crm, "SELECT id FROM users WHERE username = 'tess2'")


def test_user_add_refuses_incomplete_logins(site: Site, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("another long password\n", encoding="utf-8")
    too_short = tmp_path / "short"
    too_short.write_text("2short\n", encoding="utf-8")
    unlinked, no_agent, short, both, role = site.ivr_together([
        (["user", "add", "vera", "--role", "agent", "--password-file", str(secret)], {}),
        (["user", "add", "vera", "--role", "agent", "--agent-id", "999999", "--password-file", str(secret)], {}),
        (["user", "add", "vera", "--role", "supervisor", "--password-file", str(too_short)], {}),
        (["user", "add", "vera", "--role", "agent", "--agent-id", "1", "--agent-interface", "PJSIP/1001",
          "--password-file", str(secret)], {}),
        (["user", "add", "vera", "--role", "operator", "--password-file", str(secret)], {}),
    ])
    assert unlinked.returncode == 1 and "an agent user needs the agent it logs in as" in unlinked.stderr
    assert no_agent.returncode == 1 and "no agent with id 999999" in no_agent.stderr
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert role.returncode == 2 and "invalid choice: 'operator'" in role.stderr
    assert not query(site.crm, "SELECT id FROM users WHERE username = 'vera'")
    linked = site.ivr("user", "add", "vera", "--role", "agent", "--agent-id", "2", "--password-file", str(secret))
    assert linked.returncode == 0, linked.stderr
    assert query(site.crm, "SELECT role, agent_id FROM users WHERE username = 'vera'") == [("agent", 2)]
