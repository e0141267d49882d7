"""Routing rules checked against the queues Asterisk defines (queues.conf), at load and on every reload."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import pytest

from conffile import ConfigError
from queues.reload import LiveRules
from queues.rules import (
    SHIPPED_QUEUES_CONF,
    QueuesNotChecked,
    load_asterisk_queues,
    load_rules,
    parse_asterisk_queues,
    parse_rules,
    queues_conf_path,
)
from tests.waiting import eventually

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED_RULES = PROJECT / "config" / "routing.yaml"
# The configuration of the Asterisk 23 the traces in tests/data were recorded with.
TRACE_QUEUES_CONF = PROJECT / "tests" / "data" / "asterisk-traces" / "asterisk-config" / "queues.conf"

RULES = """\
defaults:
  queue: support
rules:
  - name: vip-desk
    when: {vip: true}
    queue: vip
  - name: all
    queue: support
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# --- reading queues.conf -------------------------------------------------------------


def test_the_shipped_queues_conf_defines_the_queues_the_readme_lists():
    queues = load_asterisk_queues(SHIPPED_QUEUES_CONF)
    assert queues.names == {"vip", "key_accounts", "b2b", "b2c", "support", "english", "after_hours"}
    text = SHIPPED_QUEUES_CONF.read_text(encoding="utf-8")
    assert queues.defined["vip"] == (str(SHIPPED_QUEUES_CONF), line_of(text, "[vip](cc-queue)"))


def test_the_shipped_rules_use_only_queues_the_shipped_asterisk_defines():
    """queues.conf says "keep both lists the same": this is the check."""
    rules = load_rules(SHIPPED_RULES, queues=load_asterisk_queues(SHIPPED_QUEUES_CONF))
    assert rules.queues <= load_asterisk_queues(SHIPPED_QUEUES_CONF).names


def test_the_queues_of_a_real_asterisk_configuration_leave_out_general_and_templates():
    assert load_asterisk_queues(TRACE_QUEUES_CONF).names == {"vip", "support", "b2b", "ringtest"}


def test_comments_templates_and_additions_are_read_as_asterisk_reads_them():
    queues = parse_asterisk_queues(textwrap.dedent("""\
        [general]                 ; settings, not a queue
        [tpl](!)                  ; a template
        [tpl2](!,tpl)             ; a template built on one
        [sales](tpl, tpl2)        ; a queue built on templates
        member => PJSIP/1001      ; [not-a-section]
        ;[commented-out]
        ;-- a block comment
        [in-a-block]
           ;-- nested --;
        [still-in-it]
        --; [after-block](tpl)
        [sales](+)                ; adds to sales
        [General-2]
        """), "queues.conf")
    assert queues.names == {"sales", "after-block", "General-2"}
    assert queues.defined["sales"] == ("queues.conf", 4)
    assert queues.defined["after-block"] == ("queues.conf", 11)


def test_includes_are_followed_from_the_configuration_directory(tmp_path):
    conf = tmp_path / "asterisk"
    write(conf / "queues.d" / "10-sales.conf", "[sales]\n")
    write(conf / "queues.d" / "20-desk.conf", "[desk](!)\n[desk-a](desk)\n")
    write(conf / "extra.conf", "[extra]\n")
    main = write(conf / "queues.conf", """\
        [general]
        #include "queues.d/*.conf"
        #include extra.conf
        #tryinclude "site-only.conf"
        [support]
        """)
    queues = load_asterisk_queues(main)
    assert queues.names == {"sales", "desk-a", "extra", "support"}
    assert queues.defined["desk-a"] == (str(conf / "queues.d" / "20-desk.conf"), 2)
    assert queues.source == str(main)


@pytest.mark.parametrize("text, line, message", [
    ("[general]\n[vip\nstrategy=ringall\n", 2, "malformed section header '[vip'"),
    ("[a]\n#include \"missing.conf\"\n", 2, "#include 'missing.conf'"),
    ("[a]\n\n#includ x.conf\n", 3, "unknown directive"),
    ("#include queues.conf\n", 1, "includes itself"),
])
def test_a_broken_queues_conf_is_an_error_with_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path / "queues.conf", text)
    with pytest.raises(ConfigError) as caught:
        load_asterisk_queues(path)
    assert (caught.value.source, caught.value.line) == (str(path), line)
    assert message in caught.value.message


def test_an_absent_file_or_exec_means_the_queues_cannot_be_known(tmp_path):
    with pytest.raises(QueuesNotChecked, match="not found"):
        load_asterisk_queues(tmp_path / "queues.conf")
    with pytest.raises(QueuesNotChecked, match="not a file"):
        load_asterisk_queues(tmp_path)
    built = write(tmp_path / "built.conf", "[a]\n#exec /usr/local/bin/make-queues\n")
    with pytest.raises(QueuesNotChecked, match=rf"{built}, line 2: #exec"):
        load_asterisk_queues(built)


def test_the_queues_conf_path_comes_from_the_environment_else_the_shipped_file(tmp_path):
    assert queues_conf_path({}) == SHIPPED_QUEUES_CONF
    assert queues_conf_path({"IVR_QUEUES_CONF": str(tmp_path / "q.conf")}) == tmp_path / "q.conf"
    assert queues_conf_path({"IVR_QUEUES_CONF": ""}) is None  # the operator turned the check off


# --- the rules against the queues -------------------------------------------------------


def test_a_rule_queue_asterisk_does_not_define_is_an_error_at_its_line():
    queues = load_asterisk_queues(SHIPPED_QUEUES_CONF)
    text = RULES.replace("queue: vip", "queue: vipp")
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "routing.yaml", queues=queues)
    assert (caught.value.source, caught.value.line) == ("routing.yaml", line_of(text, "queue: vipp"))
    assert f"queue 'vipp' is not defined in {SHIPPED_QUEUES_CONF}; did you mean 'vip'?" in caught.value.message
    assert "after_hours, b2b, b2c, english, key_accounts, support, vip" in caught.value.message
    parse_rules(text, "routing.yaml")  # without the queues there is nothing to check against


def test_the_default_queue_and_the_spelling_are_checked_too():
    queues = parse_asterisk_queues("[support]\n[VIP]\n")
    with pytest.raises(ConfigError) as caught:
        parse_rules(RULES.replace("queue: support\nrules", "queue: suport\nrules"), "routing.yaml", queues=queues)
    assert caught.value.line == 2 and "'suport' is not defined" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        parse_rules(RULES, "routing.yaml", queues=queues)
    assert caught.value.line == 6 and "it is written 'VIP' there" in caught.value.message


# --- live rules: at start-up and on every reload ------------------------------------------


@pytest.fixture
def site(tmp_path) -> tuple[Path, Path]:
    """A rules file and an operator's queues.conf beside it."""
    return write(tmp_path / "routing.yaml", RULES), write(tmp_path / "queues.conf", "[support]\n[vip]\n")


def test_start_up_checks_the_rules_against_the_queues_conf(site):
    rules_file, queues_file = site
    live = LiveRules(rules_file, queues_file=queues_file)
    assert live.queues is not None and live.queues.source == str(queues_file)
    write(rules_file, RULES.replace("queue: vip", "queue: vipp"))
    with pytest.raises(ConfigError) as caught:
        LiveRules(rules_file, queues_file=queues_file)
    assert (caught.value.source, caught.value.line) == (str(rules_file), 6)


def test_start_up_uses_ivr_queues_conf_else_the_shipped_file(site, monkeypatch):
    rules_file, queues_file = site
    write(rules_file, RULES.replace("queue: vip", "queue: key_accounts"))
    monkeypatch.delenv("IVR_QUEUES_CONF", raising=False)
    assert LiveRules(rules_file).queues.source == str(SHIPPED_QUEUES_CONF)
    monkeypatch.setenv("IVR_QUEUES_CONF", str(queues_file))  # the operator's: no key_accounts there
    with pytest.raises(ConfigError, match="'key_accounts' is not defined in"):
        LiveRules(rules_file)
    monkeypatch.setenv("IVR_QUEUES_CONF", "")
    assert LiveRules(rules_file).queues is None


def test_an_absent_queues_conf_is_said_once_and_the_rules_load(site, caplog):
    rules_file, queues_file = site
    queues_file.unlink()
    with caplog.at_level(logging.WARNING, logger="queues.reload"):
        live = LiveRules(rules_file, queues_file=queues_file)
        assert live.reload()
    assert live.queues is None and [rule.name for rule in live.current.rules] == ["vip-desk", "all"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"routing rules: queues not checked against Asterisk's queues.conf: {queues_file}: not found"]


def test_a_queue_removed_from_asterisk_keeps_the_last_good_rules(site, caplog):
    rules_file, queues_file = site
    live = LiveRules(rules_file, queues_file=queues_file)
    write(queues_file, "[support]\n")
    with caplog.at_level(logging.ERROR, logger="queues.reload"):
        assert live.reload() is False
    assert live.current.queues == {"vip", "support"}
    assert f"{rules_file}, line 6: queue 'vip' is not defined in {queues_file}" in caplog.text
    write(queues_file, "[support]\n[vip]\n")
    assert live.reload() and live.error is None


async def test_the_watcher_rechecks_when_queues_conf_changes(site):
    rules_file, queues_file = site
    live = LiveRules(rules_file, queues_file=queues_file, poll_interval=0.01)
    await live.start()
    try:
        temporary = queues_file.with_name("queues.conf.new")
        temporary.write_text("[support]\n", encoding="utf-8")
        os.replace(temporary, queues_file)  # as an editor saves it
        await eventually(lambda: live.error is not None)
        assert "queue 'vip' is not defined" in str(live.error)
    finally:
        await live.stop()
