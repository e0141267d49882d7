"""The shipped Asterisk configuration, checked for real.

Three layers:

* asterisklint (the PyPI linter) reads extensions.conf the way Asterisk's
  pbx_config does and must report nothing, bar one narrow, explained
  exception;
* a parser of Asterisk's configuration format (categories, templates,
  ``=>`` objects, ``;`` comments, ``#include`` / ``#tryinclude``) reads all
  four files and the tests assert the contract with the server on them;
* a small dialplan interpreter runs calls through extensions.conf with the
  semantics of the applications it uses (Set, ExecIf, GotoIf, AGI, Dial,
  Queue, ...) so the fail-open promise is checked on what a caller would
  live through: server down, server answering, manager busy, queue empty.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "asterisk_conf"
EXTENSIONS = CONF_DIR / "extensions.conf"
QUEUES = CONF_DIR / "queues.conf"
MANAGER = CONF_DIR / "manager.conf"
PJSIP = CONF_DIR / "pjsip.conf"

QUEUE_NAMES = {"vip", "key_accounts", "b2b", "b2c", "support", "english", "after_hours"}

# (dialled number, line name given to the AGI, the line's default queue)
LINES = [
    ("74955550100", "general", "support"),
    ("74955550200", "b2b", "b2b"),
    ("74955550300", "b2c", "b2c"),
]

PLACEHOLDER = re.compile(r"^CHANGE_ME")


# ---------------------------------------------------------------------------
# Asterisk's configuration format (main/config.c)


class ConfigSyntaxError(ValueError):
    pass


@dataclass
class Option:
    key: str
    value: str
    line: int
    is_object: bool  # written "key => value"


@dataclass
class Section:
    name: str
    line: int
    is_template: bool = False
    templates: list[str] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)

    def values(self, key: str) -> list[str]:
        return [o.value for o in self.options if o.key == key]

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.values(key)
        return found[-1] if found else default


@dataclass
class Include:
    directive: str  # "include" or "tryinclude"
    target: str
    line: int
    section: str | None
    found: bool


@dataclass
class Config:
    path: Path
    sections: list[Section]
    includes: list[Include]

    def named(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name == name]

    def section(self, name: str) -> Section:
        found = self.named(name)
        assert len(found) == 1, f"{self.path.name}: expected one [{name}], found {len(found)}"
        return found[0]

    def resolved(self, section: Section) -> list[Option]:
        """The section's options after its templates' (as Asterisk copies them)."""
        options: list[Option] = []
        for template in section.templates:
            candidates = [s for s in self.sections if s.name == template and s is not section]
            if not candidates:
                raise ConfigSyntaxError(
                    f"{self.path.name}:{section.line}: template [{template}] does not exist"
                )
            options.extend(self.resolved(candidates[-1]))
        return options + section.options

    def resolved_get(self, section: Section, key: str) -> str | None:
        found = [o.value for o in self.resolved(section) if o.key == key]
        return found[-1] if found else None


_CATEGORY = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?$")
_DIRECTIVE = re.compile(r"^#(include|tryinclude|exec)\s+(.+)$")


def _strip_comment(line: str, in_block: bool) -> tuple[str, bool]:
    """Drop ``;`` comments and ``;-- --;`` blocks; ``\\;`` is a literal semicolon."""
    out = []
    i = 0
    while i < len(line):
        if in_block:
            end = line.find("--;", i)
            if end < 0:
                return "".join(out), True
            i = end + 3
            in_block = False
            continue
        ch = line[i]
        if ch == "\\" and line[i + 1 : i + 2] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            if line[i : i + 3] == ";--":
                in_block = True
                i += 3
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out), in_block


def parse_config(path: Path, _into: Config | None = None, _current: list | None = None) -> Config:
    """Parse one Asterisk configuration file, following its includes."""
    config = _into or Config(path=path, sections=[], includes=[])
    current = _current if _current is not None else [None]  # the open section
    in_block = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text, in_block = _strip_comment(raw, in_block)
        text = text.strip()
        if not text:
            continue
        where = f"{path.name}:{number}"
        directive = _DIRECTIVE.match(text)
        if directive:
            kind, target = directive.group(1), directive.group(2).strip().strip('"<>')
            if kind == "exec":
                raise ConfigSyntaxError(f"{where}: #exec is not used in this project")
            included = path.parent / target
            config.includes.append(
                Include(kind, target, number, current[0].name if current[0] else None, included.exists())
            )
            if included.exists():
                # the included lines go on in the open section; the including
                # file itself goes on in it afterwards, whatever the other opened
                parse_config(included, config, [current[0]])
            continue
        category = _CATEGORY.match(text)
        if category:
            flags = [f.strip() for f in (category.group(2) or "").split(",") if f.strip()]
            if "+" in flags:
                matches = config.named(category.group(1))
                if not matches:
                    raise ConfigSyntaxError(f"{where}: [{category.group(1)}](+) extends nothing")
                current[0] = matches[-1]
                continue
            section = Section(
                name=category.group(1),
                line=number,
                is_template="!" in flags,
                templates=[f for f in flags if f != "!"],
            )
            config.sections.append(section)
            current[0] = section
            continue
        if current[0] is None:
            raise ConfigSyntaxError(f"{where}: option outside any [section]: {text!r}")
        if "=" not in text:
            raise ConfigSyntaxError(f"{where}: expected 'name = value', got {text!r}")
        key, _, value = text.partition("=")
        is_object = value.startswith(">")
        if is_object:
            value = value[1:]
        key, value = key.strip(), value.strip()
        if not key:
            raise ConfigSyntaxError(f"{where}: option without a name: {text!r}")
        current[0].options.append(Option(key, value, number, is_object))
    if in_block:
        raise ConfigSyntaxError(f"{path.name}: block comment ';--' never closed")
    return config


# ---------------------------------------------------------------------------
# The dialplan as pbx_config builds it


@dataclass(frozen=True)
class Step:
    context: str
    pattern: str
    priority: int
    label: str | None
    app: str
    args: str  # raw, before variable substitution
    line: int


def split_app(text: str) -> tuple[str, str]:
    """``App(args)`` -> ("App", "args"); Asterisk cuts at the first ``(`` and the last ``)``."""
    name, paren, rest = text.partition("(")
    if not paren:
        return name.strip(), ""
    if not rest.endswith(")"):
        raise ConfigSyntaxError(f"unbalanced parenthesis in {text!r}")
    return name.strip(), rest[:-1]


class Dialplan:
    def __init__(self, config: Config):
        self.config = config
        self.globals: dict[str, str] = {}
        self.contexts: dict[str, dict[str, list[Step]]] = {}
        for section in config.sections:
            if section.name == "general":
                continue
            if section.name == "globals":
                for option in section.options:
                    self.globals[option.key] = option.value
                continue
            steps = self.contexts.setdefault(section.name, {})
            last: Step | None = None
            for option in section.options:
                if option.key not in ("exten", "same", "include"):
                    raise ConfigSyntaxError(f"extensions.conf:{option.line}: unexpected {option.key!r}")
                if option.key == "include":
                    raise ConfigSyntaxError(f"extensions.conf:{option.line}: includes are not modelled")
                if option.key == "exten":
                    pattern, _, rest = option.value.partition(",")
                else:
                    if last is None:
                        raise ConfigSyntaxError(f"extensions.conf:{option.line}: 'same' without 'exten'")
                    pattern, rest = last.pattern, option.value
                prio_text, _, app_text = rest.partition(",")
                label = None
                label_match = re.match(r"^(\w+)\((\w+)\)$", prio_text.strip())
                if label_match:
                    prio_text, label = label_match.group(1), label_match.group(2)
                prio_text = prio_text.strip()
                if prio_text == "n":
                    if last is None or last.pattern != pattern:
                        raise ConfigSyntaxError(
                            f"extensions.conf:{option.line}: 'n' with no previous priority"
                        )
                    priority = last.priority + 1
                else:
                    priority = int(prio_text)
                app, args = split_app(app_text.strip())
                step = Step(section.name, pattern.strip(), priority, label, app, args, option.line)
                steps.setdefault(step.pattern, []).append(step)
                last = step

    def steps(self):
        for context in self.contexts.values():
            for steps in context.values():
                yield from steps

    def find_pattern(self, context: str, exten: str) -> str:
        patterns = self.contexts.get(context)
        if patterns is None:
            raise LookupError(f"no context [{context}]")
        if exten in patterns:
            return exten
        matching = [p for p in patterns if p.startswith("_") and pattern_matches(p, exten)]
        if not matching:
            raise LookupError(f"no extension {exten!r} in [{context}]")
        # Asterisk prefers the most specific pattern; the patterns used here
        # never overlap, so more than one match is a configuration mistake.
        assert len(matching) == 1, f"{exten!r} matches several patterns in [{context}]: {matching}"
        return matching[0]

    def step_at(self, context: str, pattern: str, priority: int | str) -> Step | None:
        for step in self.contexts[context][pattern]:
            if step.priority == priority or (isinstance(priority, str) and step.label == priority):
                return step
        if isinstance(priority, str):
            raise LookupError(f"no label {priority!r} in [{context}] {pattern}")
        return None


def pattern_matches(pattern: str, exten: str) -> bool:
    regex = []
    chars = iter(pattern[1:])
    for ch in chars:
        if ch == "X":
            regex.append("[0-9]")
        elif ch == "Z":
            regex.append("[1-9]")
        elif ch == "N":
            regex.append("[2-9]")
        elif ch == ".":
            regex.append(".+")
        elif ch == "!":
            regex.append(".*")
        elif ch == "[":
            body = ""
            for inner in chars:
                if inner == "]":
                    break
                body += inner
            regex.append(f"[{re.escape(body).replace(chr(92) + '-', '-')}]")
        else:
            regex.append(re.escape(ch))
    return re.fullmatch("".join(regex), exten) is not None


# ---------------------------------------------------------------------------
# Variable substitution and $[...] expressions, as far as this dialplan uses them


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
    raise ConfigSyntaxError(f"unbalanced {opening!r} in {text!r}")


def substitute(text: str, lookup: Callable[[str], str]) -> str:
    out = []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            end = _closing(text, i + 1, "{", "}")
            out.append(_variable(substitute(text[i + 2 : end], lookup), lookup))
            i = end + 1
        elif text.startswith("$[", i):
            end = _closing(text, i + 1, "[", "]")
            out.append(evaluate(substitute(text[i + 2 : end], lookup)))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _variable(name: str, lookup: Callable[[str], str]) -> str:
    function = re.fullmatch(r"(\w+)\((.*)\)", name, re.S)
    if function:
        func, args = function.groups()
        if func == "REGEX":
            parts = args.split('"')
            if len(parts) != 3:
                return ""  # func_strings refuses the arguments: the value is empty
            value = parts[2][1:] if parts[2][:1] in (" ", "\t") else parts[2]
            return "1" if re.search(parts[1], value) else "0"
        if func == "LEN":
            return str(len(args))
        raise ConfigSyntaxError(f"function {func} is not modelled")
    substring = re.fullmatch(r"(\w+):(-?\d+)(?::(-?\d+))?", name)
    if substring:
        value = lookup(substring.group(1))
        start = int(substring.group(2))
        value = value[start:]
        if substring.group(3) is not None:
            value = value[: int(substring.group(3))]
        return value
    if not re.fullmatch(r"\w+", name):
        raise ConfigSyntaxError(f"variable reference {name!r} is not modelled")
    return lookup(name)


_TOKEN = re.compile(r'\s*(?:"([^"]*)"|(!=|<=|>=|[=<>&|])|([^\s"=!<>&|]+))')


def evaluate(expression: str) -> str:
    """Asterisk's $[...] for comparisons joined by & and |; result "1" or "0"."""
    tokens: list[tuple[str, str]] = []
    position = 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if not match or match.end() == position:
            raise ConfigSyntaxError(f"cannot read expression {expression!r}")
        quoted, operator, word = match.groups()
        if operator:
            tokens.append(("op", operator))
        else:
            tokens.append(("value", quoted if quoted is not None else word))
        position = match.end()
        while position < len(expression) and expression[position].isspace():
            position += 1

    class Malformed(Exception):
        pass

    def compare(items: list[tuple[str, str]]) -> bool:
        if len(items) == 1 and items[0][0] == "value":
            return items[0][1] not in ("", "0")
        if len(items) != 3 or items[0][0] != "value" or items[1][0] != "op" or items[2][0] != "value":
            raise Malformed
        left, op, right = items[0][1], items[1][1], items[2][1]
        if re.fullmatch(r"-?\d+", left) and re.fullmatch(r"-?\d+", right):
            a, b = int(left), int(right)
        else:
            a, b = left, right  # type: ignore[assignment]
        return {
            "=": a == b,
            "!=": a != b,
            "<": a < b,
            ">": a > b,
            "<=": a <= b,
            ">=": a >= b,
        }[op]

    def split(items, operator):
        groups, current = [], []
        for item in items:
            if item == ("op", operator):
                groups.append(current)
                current = []
            else:
                current.append(item)
        groups.append(current)
        return groups

    try:
        result = any(all(compare(part) for part in split(group, "&")) for group in split(tokens, "|"))
    except Malformed:
        return ""  # Asterisk logs a syntax error and the expression is empty
    return "1" if result else "0"


# ---------------------------------------------------------------------------
# Running a call


@dataclass
class Executed:
    app: str
    args: str  # after substitution
    step: Step
    variables: dict[str, str]  # channel variables when it ran


@dataclass
class Call:
    executed: list[Executed]
    ended: str  # how the call ended, e.g. "Hangup", "answered in queue vip" (a Queue() without "c")
    answered: str | None = None  # who took the call and hung up first: "manager", "queue vip"

    def apps(self, name: str) -> list[Executed]:
        return [e for e in self.executed if e.app == name]

    def index(self, name: str) -> int:
        for i, e in enumerate(self.executed):
            if e.app == name:
                return i
        raise AssertionError(f"{name} never ran: {[e.app for e in self.executed]}")


def server_down(variables: dict[str, str], url: str, args: list[str]) -> str:
    return "FAILURE"  # Asterisk could not connect: nothing was set


def server_sets(**values: str):
    def agi(variables: dict[str, str], url: str, args: list[str]) -> str:
        variables.update(values)
        return "SUCCESS"

    return agi


def run_call(
    dialplan: Dialplan,
    context: str,
    exten: str,
    *,
    agi=server_down,
    dial_status: str = "NOANSWER",
    answered_in: frozenset[str] = frozenset(),
    queue_status: str = "TIMEOUT",
    variables: dict[str, str] | None = None,
    global_overrides: dict[str, str] | None = None,
    max_steps: int = 200,
) -> Call:
    """Run a call from (context, exten, 1) until it ends."""
    channel: dict[str, str] = dict(variables or {})
    globals_ = {**dialplan.globals, **(global_overrides or {})}
    executed: list[Executed] = []
    answered: list[str] = []
    position = [context, exten, 1]

    def lookup(name: str) -> str:
        if name == "EXTEN":
            return position[1]
        if name == "CONTEXT":
            return position[0]
        if name in channel:
            return channel[name]
        return globals_.get(name, "")

    def jump(target: str) -> None:
        parts = [p.strip() for p in target.split(",")]
        if len(parts) == 1:
            position[2] = int(parts[0]) if parts[0].isdigit() else parts[0]
        elif len(parts) == 2:
            position[1], position[2] = parts[0], int(parts[1]) if parts[1].isdigit() else parts[1]
        elif len(parts) == 3:
            position[0], position[1] = parts[0], parts[1]
            position[2] = int(parts[2]) if parts[2].isdigit() else parts[2]
        else:
            raise ConfigSyntaxError(f"bad Goto target {target!r}")

    def execute(app: str, args: str, step: Step) -> str | None:
        """Run one application; a string return ends the call, "jump" means position moved."""
        executed.append(Executed(app, args, step, dict(channel)))
        if app in ("NoOp", "Verbose", "Answer", "Wait", "Playback", "Return"):
            return None
        if app == "Set":
            name, eq, value = args.partition("=")
            assert eq, f"Set without '=' at line {step.line}"
            channel[name.strip()] = value
            return None
        if app == "ExecIf":
            condition, _, rest = args.partition("?")
            true_app, _, false_app = _split_outside_parens(rest, ":")
            chosen = true_app if condition.strip() not in ("", "0") else false_app
            if chosen:
                name, inner = split_app(chosen)
                assert name not in ("Goto", "GotoIf", "Hangup"), "ExecIf must not move the call"
                return execute(name, inner, step)
            return None
        if app == "GotoIf":
            condition, _, labels = args.partition("?")
            if_true, _, if_false = labels.partition(":")
            target = if_true if condition.strip() not in ("", "0") else if_false
            if target:
                jump(target)
                return "jump"
            return None
        if app == "Goto":
            jump(args)
            return "jump"
        if app == "AGI":
            url, *agi_args = args.split(",")
            status = agi(channel, url, agi_args)
            channel["AGISTATUS"] = status
            return "caller hung up during the AGI" if status == "HANGUP" else None
        if app == "Dial":
            peers, _, rest = args.partition(",")
            options = rest.partition(",")[2]
            go_on = "g" in options
            if any(not peer.partition("/")[2] for peer in peers.split("&") if peer.strip()):
                # app_dial: "Dial argument takes format (technology/resource)"
                if not go_on:
                    return "Dial hung up the caller: no technology/resource"
                channel["DIALSTATUS"] = "INVALIDARGS"
                return None
            channel["DIALSTATUS"] = dial_status
            if dial_status == "ANSWER":
                answered.append("manager")  # the manager hangs up first
                if not go_on:
                    return "Hangup after the answered Dial"
            return None
        if app == "Queue":
            queue, _, rest = args.partition(",")
            options = rest.partition(",")[0]
            if not queue:
                return "Queue without a queue name hung up the caller"
            if queue in answered_in:
                answered.append(f"queue {queue}")  # the agent hangs up first
                if "c" not in options:
                    return f"answered in queue {queue}"
                channel["QUEUESTATUS"] = "CONTINUE"  # app_queue: "c" and the callee hung up
                return None
            channel["QUEUESTATUS"] = queue_status
            return None
        if app == "VoiceMail":
            return "voicemail"
        if app == "Hangup":
            return "Hangup"
        if app == "AudioSocket":
            return None
        raise AssertionError(f"application {app} (line {step.line}) is not modelled by this test")

    for _ in range(max_steps):
        ctx, ext = position[0], position[1]
        pattern = dialplan.find_pattern(ctx, ext)
        step = dialplan.step_at(ctx, pattern, position[2])
        if step is None:
            return Call(executed, "ran off the end of the extension", answered[-1] if answered else None)
        position[2] = step.priority
        outcome = execute(step.app, substitute(step.args, lookup), step)
        if outcome == "jump":
            continue
        if outcome is not None:
            return Call(executed, outcome, answered[-1] if answered else None)
        position[2] = step.priority + 1
    raise AssertionError("the call never ended: a loop in the dialplan?")


def _split_outside_parens(text: str, separator: str) -> tuple[str, str, str]:
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            return text[:i], separator, text[i + 1 :]
    return text, "", ""


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def extensions() -> Config:
    return parse_config(EXTENSIONS)


@pytest.fixture(scope="module")
def dialplan(extensions) -> Dialplan:
    return Dialplan(extensions)


@pytest.fixture(scope="module")
def queues() -> Config:
    return parse_config(QUEUES)


@pytest.fixture(scope="module")
def manager() -> Config:
    return parse_config(MANAGER)


@pytest.fixture(scope="module")
def pjsip() -> Config:
    return parse_config(PJSIP)


# ---------------------------------------------------------------------------
# asterisklint


def asterisklint(path: Path) -> list[tuple[str, str]]:
    """Run ``asterisklint dialplan-check``; returns (message code, text) pairs."""
    runner = "import os, sys; from asterisklint.main import main; sys.exit(main(sys.argv[1:], os.environ))"
    env = {k: v for k, v in os.environ.items() if k != "ALINT_IGNORE"}
    result = subprocess.run(
        [sys.executable, "-c", runner, "dialplan-check", "--func-odbc", "", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=path.parent,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stderr
    messages = []
    for line in result.stderr.splitlines():
        match = re.match(r"^\S+:\d+ ([A-Z]_[A-Z0-9_]+): (.*)$", line)
        if match:
            messages.append((match.group(1), match.group(2)))
        elif line.strip():
            raise AssertionError(f"unexpected asterisklint output: {line!r}")
    assert (result.returncode == 1) == bool(messages), result.stderr
    return messages


def test_asterisklint_reports_nothing_on_the_dialplan():
    assert asterisklint(EXTENSIONS) == []


def test_asterisklint_catches_a_goto_to_a_missing_context(tmp_path):
    broken = tmp_path / "extensions.conf"
    broken.write_text(
        "[general]\nstatic=yes\n\n[globals]\n\n[from-pstn]\n"
        "exten => _X.,1,Answer()\n same => n,Goto(line-missing,${EXTEN},1)\n"
    )
    assert [code for code, _ in asterisklint(broken)] == ["E_DP_GOTO_NOCONTEXT"]


# ---------------------------------------------------------------------------
# The configuration parser itself


def test_parser_reads_templates_objects_comments_and_includes(tmp_path):
    (tmp_path / "extra.conf").write_text("secret = s3\n")
    main = tmp_path / "main.conf"
    main.write_text(
        "[base](!)\nstrategy = ringall ; trailing comment\n;-- a block\ncomment --;\n"
        "[vip](base)\nmember => PJSIP/1001,0,Anna\nnote = a\\;b\n"
        '#include "extra.conf"\n#tryinclude "absent.conf"\n'
    )
    config = parse_config(main)
    vip = config.section("vip")
    assert config.resolved_get(vip, "strategy") == "ringall"
    assert vip.options[0].is_object and vip.get("member") == "PJSIP/1001,0,Anna"
    assert vip.get("note") == "a;b"
    assert vip.get("secret") == "s3"  # an include inside a section adds to it
    assert [(i.target, i.found) for i in config.includes] == [("extra.conf", True), ("absent.conf", False)]


def test_parser_rejects_a_line_that_is_not_an_option(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[general]\nthis is not an option\n")
    with pytest.raises(ConfigSyntaxError, match="bad.conf:2"):
        parse_config(bad)


def test_interpreter_fails_on_an_application_it_does_not_model(tmp_path):
    conf = tmp_path / "extensions.conf"
    conf.write_text("[general]\n[globals]\n[c]\nexten => _X.,1,Festival(hello)\n")
    with pytest.raises(AssertionError, match="Festival"):
        run_call(Dialplan(parse_config(conf)), "c", "12")


# ---------------------------------------------------------------------------
# The lines and the FastAGI contract


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_trunk_context_sends_each_did_to_its_line(dialplan, did, line, default_queue):
    for dialled in (did, "+" + did):
        call = run_call(dialplan, "from-pstn", dialled)
        agi = call.apps("AGI")[0]
        assert agi.step.context == f"line-{line}"
        assert agi.variables["IVR_QUEUE"] == default_queue


@pytest.mark.parametrize("dialled", ["74990001122", "s"])
def test_unknown_or_missing_did_reaches_the_general_line(dialplan, dialled):
    call = run_call(dialplan, "from-pstn", dialled)
    assert call.apps("AGI")[0].step.context == "line-general"


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_every_line_sets_its_default_queue_and_priority_before_the_agi(
    dialplan, did, line, default_queue
):
    call = run_call(dialplan, "from-pstn", did)
    agi_at = call.index("AGI")
    sets = [e.args for e in call.executed[:agi_at] if e.app == "Set"]
    assert f"IVR_QUEUE={default_queue}" in sets
    assert any(re.fullmatch(r"QUEUE_PRIO=-?\d+", s) for s in sets)
    # the default is in place before anything that can fail (Answer included)
    first_set = call.index("Set")
    assert call.executed[first_set].args == f"IVR_QUEUE={default_queue}"


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_agi_calls_script_inbound_on_the_global_server_with_the_line_name(
    dialplan, did, line, default_queue
):
    assert dialplan.globals["IVR_SERVER"] == "127.0.0.1:4573"
    call = run_call(dialplan, "from-pstn", did)
    agi = call.apps("AGI")[0]
    assert agi.step.args.startswith("agi://${IVR_SERVER}/inbound,")
    url, first_arg = agi.args.split(",")[:2]
    assert url == "agi://127.0.0.1:4573/inbound"
    # agi_network_script is what follows the first "/" after the host
    assert re.split(r"[?/]", url.split("//", 1)[1].split("/", 1)[1])[0] == "inbound"
    assert first_arg == line
    # the dialled number is still the extension when the AGI runs (agi_extension)
    assert agi.step.pattern.startswith("_") and pattern_matches(agi.step.pattern, did)


def test_site_globals_file_overrides_the_server_address(tmp_path):
    shutil.copy(EXTENSIONS, tmp_path / "extensions.conf")
    (tmp_path / "extensions_ivr_globals.conf").write_text(
        "IVR_SERVER=172.28.0.20:4573\n"
    )
    plan = Dialplan(parse_config(tmp_path / "extensions.conf"))
    call = run_call(plan, "from-pstn", LINES[0][0])
    assert call.apps("AGI")[0].args.startswith("agi://172.28.0.20:4573/inbound,")


# ---------------------------------------------------------------------------
# Fail open


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
@pytest.mark.parametrize("agi_status", ["FAILURE", "NOTFOUND", "SUCCESS"])
def test_caller_reaches_the_line_default_queue_whatever_the_agi_status(
    dialplan, did, line, default_queue, agi_status
):
    call = run_call(
        dialplan, "from-pstn", did, agi=lambda v, u, a: agi_status, answered_in=frozenset(QUEUE_NAMES)
    )
    queue = call.apps("Queue")[0]
    assert queue.args.split(",")[0] == default_queue
    assert queue.variables["QUEUE_PRIO"] == "0"
    assert call.apps("Dial") == []
    assert call.answered == f"queue {default_queue}"


def test_no_step_after_the_agi_branches_on_agistatus(dialplan):
    after_agi = {"ivr-route"} | {f"line-{line}" for _, line, _ in LINES}
    for step in dialplan.steps():
        if step.context not in after_agi or step.app in ("NoOp", "Verbose"):
            continue
        assert "AGISTATUS" not in step.args, f"line {step.line}: {step.app}({step.args})"


@pytest.mark.parametrize(
    "queue_status", ["TIMEOUT", "JOINEMPTY", "LEAVEEMPTY", "FULL", "UNKNOWN", "WITHDRAW"]
)
def test_caller_no_queue_takes_tries_the_fallback_queue_then_hears_the_goodbye(dialplan, queue_status):
    call = run_call(
        dialplan, "from-pstn", LINES[1][0], agi=server_sets(IVR_QUEUE="vip"), queue_status=queue_status
    )
    assert [q.args.split(",")[0] for q in call.apps("Queue")] == ["vip", "support"]
    assert call.executed[-2].app == "Playback" and call.executed[-2].args == "vm-nobodyavail&vm-goodbye"
    assert call.ended == "Hangup"


def test_caller_already_in_the_fallback_queue_is_not_queued_there_twice(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[0][0], queue_status="JOINEMPTY")
    assert [q.args.split(",")[0] for q in call.apps("Queue")] == ["support"]
    assert call.apps("Playback")[-1].args == "vm-nobodyavail&vm-goodbye"


def test_unanswered_caller_leaves_a_voicemail_when_a_mailbox_is_configured(dialplan):
    call = run_call(
        dialplan, "from-pstn", LINES[2][0], global_overrides={"IVR_VOICEMAIL": "100@default"}
    )
    assert [q.args.split(",")[0] for q in call.apps("Queue")] == ["b2c", "support"]
    assert call.apps("VoiceMail")[0].args == "100@default,u"
    assert call.ended == "voicemail"


@pytest.mark.parametrize("queue_status", ["TIMEOUT", "JOINEMPTY", "LEAVEEMPTY", "FULL", "UNKNOWN"])
@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_no_call_ends_before_a_human_queue_was_tried(dialplan, did, line, default_queue, queue_status):
    for agi in (server_down, server_sets(IVR_QUEUE="english", QUEUE_PRIO="5")):
        call = run_call(dialplan, "from-pstn", did, agi=agi, queue_status=queue_status)
        endings = [i for i, e in enumerate(call.executed) if e.app in ("Hangup", "VoiceMail")]
        first_hangup = endings[0] if endings else len(call.executed)
        assert any(e.app == "Queue" for e in call.executed[:first_hangup])
        assert "support" in [q.args.split(",")[0] for q in call.apps("Queue")]


def test_queue_wait_is_bounded(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[1][0], agi=server_sets(IVR_QUEUE="vip"))
    for queue in call.apps("Queue"):
        timeout = queue.args.split(",")[4]
        assert timeout.isdigit() and 0 < int(timeout) <= 900, queue.args


# ---------------------------------------------------------------------------
# What the server decides


def test_server_queue_and_priority_are_in_place_when_the_queue_runs(dialplan):
    call = run_call(
        dialplan,
        "from-pstn",
        LINES[0][0],
        agi=server_sets(IVR_QUEUE="vip", QUEUE_PRIO="10", IVR_CUSTOMER_ID="c-1", IVR_CALL_ID="call-1"),
        answered_in=frozenset({"vip"}),
    )
    queue = call.apps("Queue")[0]
    assert queue.step.args.startswith("${IVR_QUEUE}")
    assert queue.args.split(",")[0] == "vip"
    assert queue.variables["QUEUE_PRIO"] == "10"
    assert call.answered == "queue vip"


def test_manager_is_rung_with_the_server_timeout_before_the_queue(dialplan):
    call = run_call(
        dialplan,
        "from-pstn",
        LINES[1][0],
        agi=server_sets(IVR_QUEUE="key_accounts", IVR_MANAGER="PJSIP/1002", IVR_MANAGER_TIMEOUT="15"),
        dial_status="NOANSWER",
        answered_in=frozenset({"key_accounts"}),
    )
    dial = call.apps("Dial")[0]
    assert dial.step.args.startswith("${IVR_MANAGER},${IVR_MANAGER_TIMEOUT}")
    assert dial.args.startswith("PJSIP/1002,15")
    assert call.index("Dial") < call.index("Queue")
    assert call.answered == "queue key_accounts"


@pytest.mark.parametrize("status", ["BUSY", "CHANUNAVAIL", "CONGESTION", "NOANSWER"])
def test_busy_or_absent_manager_sends_the_caller_on_to_the_queue(dialplan, status):
    call = run_call(
        dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_MANAGER="PJSIP/1001"), dial_status=status
    )
    assert call.apps("Queue")[0].args.split(",")[0] == "support"


def test_call_the_manager_answered_ends_without_queueing(dialplan):
    call = run_call(
        dialplan,
        "from-pstn",
        LINES[0][0],
        agi=server_sets(IVR_MANAGER="PJSIP/1001", IVR_MANAGER_TIMEOUT="20"),
        dial_status="ANSWER",
    )
    assert call.apps("Queue") == []
    assert call.ended.startswith("Hangup")


def test_empty_manager_skips_the_dial(dialplan):
    call = run_call(
        dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_MANAGER="", IVR_MANAGER_TIMEOUT="20")
    )
    assert call.apps("Dial") == []
    assert call.apps("Queue")


@pytest.mark.parametrize("timeout", [None, "", "abc", "0", "600", "15s", "-5", '1"5'])
def test_manager_timeout_the_server_got_wrong_rings_the_default_not_forever(dialplan, timeout):
    values = {"IVR_MANAGER": "PJSIP/1001"}
    if timeout is not None:
        values["IVR_MANAGER_TIMEOUT"] = timeout
    call = run_call(dialplan, "from-pstn", LINES[0][0], agi=server_sets(**values))
    peers, ring = call.apps("Dial")[0].args.split(",")[:2]
    assert (peers, ring) == ("PJSIP/1001", dialplan.globals["IVR_MANAGER_RING"])


@pytest.mark.parametrize("manager", ["1001", "PJSIP/", "PJSIP/1001&"])
def test_manager_dial_string_without_technology_still_reaches_the_queue(dialplan, manager):
    call = run_call(
        dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_MANAGER=manager, IVR_MANAGER_TIMEOUT="15"),
        answered_in=frozenset({"support"}),
    )
    assert call.apps("Dial"), "the Dial ran"
    assert call.answered == "queue support"


def test_announcement_plays_before_the_queue_only_when_the_server_sets_one(dialplan):
    with_announce = run_call(
        dialplan, "from-pstn", LINES[2][0], agi=server_sets(IVR_ANNOUNCE="custom/card-ready"),
        answered_in=frozenset({"b2c"}),
    )
    assert with_announce.apps("Playback")[0].args == "custom/card-ready"
    assert with_announce.index("Playback") < with_announce.index("Queue")
    without = run_call(
        dialplan, "from-pstn", LINES[2][0], agi=server_sets(IVR_ANNOUNCE=""), answered_in=frozenset({"b2c"})
    )
    assert without.apps("Playback") == []


def test_queue_name_the_server_emptied_falls_back_to_support(dialplan):
    call = run_call(
        dialplan, "from-pstn", LINES[1][0], agi=server_sets(IVR_QUEUE=""), answered_in=frozenset({"support"})
    )
    assert call.apps("Queue")[0].args.split(",")[0] == "support"


def test_a_call_answered_by_self_service_hangs_up_without_queueing(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_CONTAINED="1", IVR_QUEUE="vip"))
    assert call.apps("Queue") == [] and call.apps("Dial") == [] and call.apps("Playback") == []
    assert call.executed[-1].app == "Hangup"


def test_a_call_not_contained_still_queues(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_CONTAINED="0", IVR_QUEUE="vip"))
    assert call.apps("Queue")[0].args.split(",")[0] == "vip"


# ---------------------------------------------------------------------------
# The post-call survey


def survey_agis(call: Call) -> list[Executed]:
    return [e for e in call.apps("AGI") if e.args.split(",")[0].endswith("/survey")]


def server_routes_then(survey_status: str, **values: str):
    """The inbound AGI sets `values`; the survey AGI ends with `survey_status`."""
    def agi(variables: dict[str, str], url: str, args: list[str]) -> str:
        if url.endswith("/survey"):
            return survey_status
        variables.update(values)
        return "SUCCESS"

    return agi


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_every_line_names_itself_in_ivr_line_for_both_agis(dialplan, did, line, default_queue):
    call = run_call(dialplan, "from-pstn", did, agi=server_sets(IVR_CALL_ID="c" * 32, IVR_SURVEY="csat"),
                    answered_in=frozenset({default_queue}))
    inbound, survey = call.apps("AGI")
    assert inbound.variables["IVR_LINE"] == line and inbound.args.split(",")[1] == line
    assert survey.args == f"agi://127.0.0.1:4573/survey,{line},{'c' * 32}"
    assert survey.step.args == "agi://${IVR_SERVER}/survey,${IVR_LINE},${IVR_CALL_ID}"


def test_every_queue_goes_on_in_the_dialplan_when_the_agent_hangs_up(dialplan):
    queues = [step for step in dialplan.steps() if step.app == "Queue"]
    assert len(queues) == 2
    for step in queues:
        assert "c" in step.args.split(",")[1], f"line {step.line}: Queue({step.args}) lacks option c"


@pytest.mark.parametrize(("did", "line", "default_queue"), LINES)
def test_the_caller_hears_the_survey_after_the_agent_hangs_up_then_the_call_ends(dialplan, did, line,
                                                                                default_queue):
    call = run_call(dialplan, "from-pstn", did, agi=server_sets(IVR_CALL_ID="call-1", IVR_SURVEY="both"),
                    answered_in=frozenset({default_queue}))
    assert call.answered == f"queue {default_queue}"
    assert [q.args.split(",")[0] for q in call.apps("Queue")] == [default_queue]  # no fallback queue after it
    assert len(survey_agis(call)) == 1 and call.index("Queue") < call.executed.index(survey_agis(call)[0])
    assert survey_agis(call)[0].variables["QUEUESTATUS"] == "CONTINUE"
    assert call.executed[-1].app == "Hangup" and call.ended == "Hangup"


def test_the_caller_the_fallback_queue_answered_hears_the_survey_too(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[1][0], agi=server_sets(IVR_QUEUE="vip", IVR_SURVEY="nps"),
                    answered_in=frozenset({"support"}))
    assert [q.args.split(",")[0] for q in call.apps("Queue")] == ["vip", "support"]
    assert call.answered == "queue support" and len(survey_agis(call)) == 1
    assert call.apps("Playback") == [] and call.ended == "Hangup"


def test_the_caller_hears_the_survey_after_the_manager_hangs_up(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[1][0],
                    agi=server_sets(IVR_MANAGER="PJSIP/1002", IVR_MANAGER_TIMEOUT="15", IVR_SURVEY="csat"),
                    dial_status="ANSWER")
    assert call.answered == "manager" and call.apps("Queue") == []
    assert call.index("Dial") < call.executed.index(survey_agis(call)[0])
    assert call.ended == "Hangup"


def test_a_self_served_caller_hears_the_survey_and_is_not_queued(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[0][0],
                    agi=server_sets(IVR_CONTAINED="1", IVR_CALL_ID="x", IVR_SURVEY="csat"))
    assert call.apps("Queue") == [] and call.apps("Dial") == []
    assert [e.args.split(",")[1:] for e in survey_agis(call)] == [["general", "x"]]
    assert call.ended == "Hangup"


@pytest.mark.parametrize("queue_status", ["TIMEOUT", "JOINEMPTY", "LEAVEEMPTY", "FULL", "WITHDRAW"])
@pytest.mark.parametrize("dial_status", ["NOANSWER", "BUSY"])
def test_a_caller_nobody_answered_hears_no_survey(dialplan, queue_status, dial_status):
    call = run_call(dialplan, "from-pstn", LINES[1][0], agi=server_sets(IVR_MANAGER="PJSIP/1002", IVR_SURVEY="both"),
                    queue_status=queue_status, dial_status=dial_status)
    assert survey_agis(call) == [] and call.answered is None
    assert call.apps("Playback")[-1].args == "vm-nobodyavail&vm-goodbye"


@pytest.mark.parametrize("survey_status", ["FAILURE", "NOTFOUND", "HANGUP", "SUCCESS"])
@pytest.mark.parametrize("how", ["queue", "manager", "self-served"])
def test_a_survey_that_fails_just_ends_the_call_once(dialplan, survey_status, how):
    values = {"queue": {}, "manager": {"IVR_MANAGER": "PJSIP/1001"}, "self-served": {"IVR_CONTAINED": "1"}}[how]
    call = run_call(dialplan, "from-pstn", LINES[0][0],
                    agi=server_routes_then(survey_status, IVR_SURVEY="csat", **values),
                    answered_in=frozenset({"support"}), dial_status="ANSWER" if how == "manager" else "NOANSWER")
    assert len(survey_agis(call)) == 1  # never asked again, never back into a queue
    after = call.executed[call.executed.index(survey_agis(call)[0]) + 1:]
    assert [e.app for e in after] == ([] if survey_status == "HANGUP" else ["Hangup"])


@pytest.mark.parametrize("how", ["queue", "manager", "self-served"])
def test_a_line_without_a_survey_ends_the_call_with_no_survey_agi(dialplan, how):
    values = {"queue": {}, "manager": {"IVR_MANAGER": "PJSIP/1001"}, "self-served": {"IVR_CONTAINED": "1"}}[how]
    call = run_call(dialplan, "from-pstn", LINES[0][0], agi=server_sets(IVR_CALL_ID="x", **values),
                    answered_in=frozenset({"support"}), dial_status="ANSWER" if how == "manager" else "NOANSWER")
    assert survey_agis(call) == []
    assert call.answered == {"queue": "queue support", "manager": "manager", "self-served": None}[how]
    assert call.executed[-1].app == "Hangup" and call.ended == "Hangup"


def test_with_the_server_down_an_answered_call_ends_without_a_survey_try(dialplan):
    call = run_call(dialplan, "from-pstn", LINES[2][0], agi=server_down, answered_in=frozenset({"b2c"}))
    assert call.answered == "queue b2c" and survey_agis(call) == []  # IVR_SURVEY never set: no AGI to wait for
    assert call.executed[-1].app == "Hangup"


def test_agent_phones_can_dial_the_lines_to_try_the_call_flow(dialplan):
    for did, line, _ in LINES:
        call = run_call(dialplan, "from-agents", did)
        assert call.apps("AGI")[0].args.split(",")[1] == line


# ---------------------------------------------------------------------------
# queues.conf


# Queue options app_queue reads in Asterisk 23 (queue_set_param and the
# member lines), so a misspelt or removed option fails here, not in
# Asterisk's log.
APP_QUEUE_OPTIONS = {
    "musicclass", "music", "musiconhold", "announce", "context", "timeout", "ringinuse",
    "setinterfacevar", "setqueuevar", "setqueueentryvar", "monitor-format", "membergosub",
    "queue-youarenext", "queue-thereare", "queue-callswaiting", "queue-quantity1",
    "queue-quantity2", "queue-holdtime", "queue-minutes", "queue-minute", "queue-seconds",
    "queue-thankyou", "queue-callerannounce", "queue-reporthold", "announce-frequency",
    "announce-to-first-user", "min-announce-frequency", "announce-round-seconds",
    "announce-holdtime", "announce-position", "announce-position-only-up",
    "announce-position-limit", "periodic-announce", "periodic-announce-startdelay",
    "periodic-announce-frequency", "relative-periodic-announce", "random-periodic-announce",
    "retry", "wrapuptime", "penaltymemberslimit", "autofill", "autopause", "autopausedelay",
    "autopausebusy", "autopauseunavail", "maxlen", "servicelevel", "strategy", "joinempty",
    "leavewhenempty", "reportholdtime", "memberdelay", "weight", "timeoutrestart",
    "defaultrule", "timeoutpriority", "log-restricted-caller-id", "member",
}
APP_QUEUE_GENERAL_OPTIONS = {
    "persistentmembers", "autofill", "monitor-type", "shared_lastcall", "negative_penalty_invalid",
    "log_membername_as_agent", "force_longest_waiting_caller", "log_unpause_on_reason_change",
    "log-caller-id-name", "realtime_rules",
}
STRATEGIES = {
    "ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "roundrobin", "linear", "wrandom",
    "rrordered",
}


def queue_sections(config: Config) -> list[Section]:
    return [s for s in config.sections if s.name != "general" and not s.is_template]


def test_queues_conf_defines_exactly_the_seven_queues(queues):
    names = [s.name for s in queue_sections(queues)]
    assert sorted(names) == sorted(QUEUE_NAMES)
    assert len(names) == len(set(names))


def test_every_queue_the_dialplan_can_name_exists(dialplan, queues):
    defined = {s.name for s in queue_sections(queues)}
    named = {dialplan.globals["IVR_FALLBACK_QUEUE"]}
    for step in dialplan.steps():
        if step.app == "Set" and step.args.startswith("IVR_QUEUE=") and "$" not in step.args:
            named.add(step.args.split("=", 1)[1])
        if step.app == "Queue" and "$" not in step.args.split(",")[0]:
            named.add(step.args.split(",")[0])
    assert named <= defined, named - defined
    assert named >= {"support", "b2b", "b2c"}


def test_queue_options_are_ones_app_queue_in_asterisk_23_reads(queues):
    for option in queues.section("general").options:
        assert option.key in APP_QUEUE_GENERAL_OPTIONS, f"queues.conf:{option.line}: {option.key}"
    for section in queues.sections:
        if section.name == "general":
            continue
        for option in section.options:
            assert option.key in APP_QUEUE_OPTIONS, f"queues.conf:{option.line}: {option.key}"
            assert option.is_object == (option.key == "member"), f"queues.conf:{option.line}"


def test_every_queue_rings_waits_wraps_up_and_measures_service_level(queues):
    for queue in queue_sections(queues):
        get = lambda key: queues.resolved_get(queue, key)  # noqa: E731
        assert get("strategy") in STRATEGIES, queue.name
        for key in ("timeout", "retry", "wrapuptime", "servicelevel"):
            assert get(key) is not None and get(key).isdigit(), (queue.name, key)
        assert 5 <= int(get("timeout")) <= 60, queue.name
        assert get("announce-position") in ("yes", "no", "limit", "more"), queue.name


def test_no_queue_keeps_a_caller_when_no_member_can_answer(queues):
    must_count_as_absent = {"unavailable", "invalid", "unknown"}
    for queue in queue_sections(queues):
        for key in ("joinempty", "leavewhenempty"):
            value = queues.resolved_get(queue, key) or ""
            factors = {f.strip() for f in value.split(",")}
            assert value == "strict" or must_count_as_absent <= factors, (queue.name, key, value)


def test_queue_members_are_named_agent_phones_defined_in_pjsip(queues, pjsip):
    endpoints = {
        s.name for s in pjsip.sections if not s.is_template and pjsip.resolved_get(s, "type") == "endpoint"
    }
    for queue in queue_sections(queues):
        members = [o.value for o in queues.resolved(queue) if o.key == "member"]
        assert members, f"queue {queue.name} has no member"
        for member in members:
            interface, penalty, name = [p.strip() for p in member.split(",")][:3]
            assert interface.startswith("PJSIP/") and interface[6:] in endpoints, member
            assert penalty.isdigit() and name, member


# ---------------------------------------------------------------------------
# manager.conf


def test_manager_sends_the_call_and_customer_ids_with_timestamped_events(manager):
    general = manager.section("general")
    channelvars = [v.strip() for v in general.get("channelvars", "").split(",")]
    assert {"IVR_CALL_ID", "IVR_CUSTOMER_ID", "IVR_SEGMENT"} <= set(channelvars)
    assert general.get("timestampevents") == "yes"


def test_manager_conf_holds_no_secret_and_takes_it_from_a_file_outside_the_repository(manager):
    for section in manager.sections:
        for secret in section.values("secret"):
            assert PLACEHOLDER.match(secret), f"manager.conf [{section.name}] has a real secret"
    user_includes = [i for i in manager.includes if i.section == "ivr"]
    assert len(user_includes) == 1
    include = user_includes[0]
    # "#include", not "#tryinclude": without the file Asterisk refuses manager.conf
    assert include.directive == "include"
    assert not include.found, "the secrets file must not be shipped in asterisk_conf/"
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--", f"*{include.target}"], capture_output=True, text=True
    )
    assert tracked.stdout.strip() == ""


def test_manager_user_accepts_only_loopback_and_reads_queue_events(manager):
    general = manager.section("general")
    assert general.get("bindaddr") == "127.0.0.1"
    user = manager.section("ivr")
    acl = [(o.key, o.value) for o in user.options if o.key in ("deny", "permit", "acl")]
    # deny everything first, then permit: Asterisk applies the last matching rule
    assert acl[0] == ("deny", "0.0.0.0/0.0.0.0")
    assert ("deny", "::/0") in acl
    assert [v for k, v in acl if k == "permit"] == ["127.0.0.1/255.255.255.255"]
    read = {p.strip() for p in user.get("read").split(",")}
    assert {"agent", "call"} <= read and "all" not in read
    write = {p.strip() for p in user.get("write").split(",")}
    assert "agent" in write and not write & {"all", "command", "system", "originate", "config"}


# ---------------------------------------------------------------------------
# pjsip.conf


PJSIP_TYPES = {
    "global", "system", "transport", "endpoint", "auth", "aor", "identify", "registration",
    "domain_alias", "acl", "contact", "phoneprov", "resource_list", "outbound-publish",
    "inbound-publication", "asterisk-publication",
}


def test_pjsip_conf_parses_into_sections_of_known_types(pjsip):
    concrete = [s for s in pjsip.sections if not s.is_template]
    assert concrete
    for section in concrete:
        where = f"pjsip.conf:{section.line} [{section.name}]"
        assert pjsip.resolved_get(section, "type") in PJSIP_TYPES, where


def test_agents_1001_to_1006_have_endpoint_password_and_registration(pjsip):
    for number in range(1001, 1007):
        name = str(number)
        types = {pjsip.resolved_get(s, "type"): s for s in pjsip.named(name)}
        assert set(types) == {"endpoint", "auth", "aor"}, name
        endpoint = types["endpoint"]
        assert pjsip.resolved_get(endpoint, "auth") == name
        assert pjsip.resolved_get(endpoint, "aors") == name
        assert pjsip.resolved_get(types["auth"], "username") == name


def test_every_password_in_pjsip_is_a_marked_placeholder(pjsip):
    for section in pjsip.sections:
        for password in section.values("password"):
            assert PLACEHOLDER.match(password), f"pjsip.conf:{section.line} [{section.name}]"


def test_every_endpoint_enters_a_context_of_the_dialplan(pjsip, dialplan):
    trunk_contexts = set()
    for section in pjsip.sections:
        if section.is_template or pjsip.resolved_get(section, "type") != "endpoint":
            continue
        context = pjsip.resolved_get(section, "context")
        assert context in dialplan.contexts, f"[{section.name}] context={context}"
        if not section.name.isdigit():
            trunk_contexts.add(context)
    assert trunk_contexts == {"from-pstn"}
