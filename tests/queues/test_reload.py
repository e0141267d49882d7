"""Live routing rules: the last good rules stay when an edit is broken."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from conffile import ConfigError
from queues.reload import LiveRules
from tests.waiting import eventually

GOOD = """
rules:
  - name: all
    queue: support
"""

GOOD_WITH_VIP = """
rules:
  - name: vip-desk
    when: {vip: true}
    queue: vip
  - name: all
    queue: support
"""

BROKEN = """
rules:
  - name: vip-desk
    when: {vipp: true}
    queue: vip
  - name: all
    queue: support
"""


def rule_names(live: LiveRules) -> list[str]:
    return [rule.name for rule in live.current.rules]


def replace_file(path: Path, text: str) -> None:
    """Write as editors that save to a new file and rename it over the old one."""
    temporary = path.with_name(path.name + ".swp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
async def watched(rules_file: Path):
    live = LiveRules(rules_file, poll_interval=0.01)
    await live.start()
    yield live
    await live.stop()


def test_first_load_of_a_broken_file_raises_with_file_and_line(rules_file):
    rules_file.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        LiveRules(rules_file)
    assert (caught.value.source, caught.value.line) == (str(rules_file), 4)


def test_first_load_of_a_missing_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        LiveRules(tmp_path / "absent.yaml")


def test_reload_keeps_the_last_good_rules_when_the_edit_is_broken(rules_file, caplog):
    live = LiveRules(rules_file)
    before = live.current
    rules_file.write_text(BROKEN, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="queues.reload"):
        assert live.reload() is False
    assert live.current is before
    assert live.error is not None and live.error.line == 4
    assert f"{rules_file}, line 4: unknown condition 'vipp'; did you mean 'vip'?" in caplog.text
    assert "keeping the previous 1 rules" in caplog.text


def test_reload_picks_up_the_fixed_file_and_says_how_many_rules(rules_file, caplog):
    live = LiveRules(rules_file)
    rules_file.write_text(BROKEN, encoding="utf-8")
    live.reload()
    rules_file.write_text(GOOD_WITH_VIP, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="queues.reload"):
        assert live.reload() is True
    assert rule_names(live) == ["vip-desk", "all"]
    assert live.error is None
    assert "2 rules" in caplog.text


def test_lines_known_to_the_server_are_checked_on_every_reload(rules_file):
    live = LiveRules(rules_file, lines=["general", "b2b"])
    rules_file.write_text(GOOD_WITH_VIP.replace("{vip: true}", "{line: b2bb}"), encoding="utf-8")
    assert live.reload() is False
    assert "did you mean 'b2b'?" in str(live.error)


async def test_watcher_picks_up_an_edit_in_place(rules_file, watched):
    rules_file.write_text(GOOD_WITH_VIP, encoding="utf-8")
    await eventually(lambda: rule_names(watched) == ["vip-desk", "all"])


async def test_watcher_picks_up_a_file_renamed_over_the_old_one(rules_file, watched):
    replace_file(rules_file, GOOD_WITH_VIP)
    await eventually(lambda: rule_names(watched) == ["vip-desk", "all"])


async def test_watcher_sees_a_replacement_with_the_same_size_and_time(rules_file, watched):
    old = rules_file.stat()
    replace_file(rules_file, GOOD.replace("support", "english"))
    os.utime(rules_file, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert rules_file.stat().st_size == old.st_size
    await eventually(lambda: watched.current.queues == {"english"})


async def test_watcher_keeps_the_last_good_rules_on_a_broken_edit_then_loads_the_fix(rules_file, watched):
    before = watched.current
    replace_file(rules_file, BROKEN)
    await eventually(lambda: watched.error is not None)
    assert watched.current is before
    replace_file(rules_file, GOOD_WITH_VIP)
    await eventually(lambda: watched.error is None)
    assert rule_names(watched) == ["vip-desk", "all"]


async def test_watcher_survives_the_file_vanishing_and_coming_back(rules_file, watched):
    before = watched.current
    rules_file.unlink()
    await eventually(lambda: watched.error is not None)
    assert watched.current is before
    rules_file.write_text(GOOD_WITH_VIP, encoding="utf-8")
    await eventually(lambda: rule_names(watched) == ["vip-desk", "all"])


async def test_sighup_reloads_the_rules(rules_file):
    live = LiveRules(rules_file, poll_interval=3600)  # only the signal can reload
    live.install_sighup(asyncio.get_running_loop())
    try:
        rules_file.write_text(GOOD_WITH_VIP, encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: rule_names(live) == ["vip-desk", "all"])
    finally:
        await live.stop()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


async def test_sighup_with_a_broken_file_keeps_the_last_good_rules(rules_file):
    live = LiveRules(rules_file, poll_interval=3600)
    before = live.current
    live.install_sighup(asyncio.get_running_loop())
    try:
        rules_file.write_text(BROKEN, encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: live.error is not None)
    finally:
        await live.stop()
    assert live.current is before


async def test_stop_ends_the_watcher(rules_file):
    def watchers() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "watch routing.yaml" and not t.done()]

    live = LiveRules(rules_file, poll_interval=0.01)
    await live.start()
    await live.start()  # a second start does not start a second watcher
    assert len(watchers()) == 1
    await live.stop()
    assert watchers() == []
