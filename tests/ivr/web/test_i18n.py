"""The pages' words: both catalogues complete and alike, a word for every code the server sends, the
language each request gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from caller_id.importer import CASE_STATUSES
from ivr.config import WebSettings, load_config
from ivr.sim.demo import demo_queues
from ivr.selfservice.dialog import NO_INPUT, NOT_UNDERSTOOD
from ivr.selfservice.script import NO, OPERATOR, YES
from ivr.web import i18n
from ivr.web.api import OUTCOMES
from queues.state import AGENT_STATES

WEB = Path(i18n.__file__).resolve().parent
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _used_keys() -> set[str]:
    """Every literal key the scripts (t("..."), t(`...`) without ${}), shells ({{...}}) and pages.py use."""
    found: set[str] = set()
    for script in (WEB / "static").glob("*.js"):
        text = script.read_text(encoding="utf-8")
        found |= set(re.findall(r'\bt\("([a-z0-9_.]+)"', text))
        found |= {k for k in re.findall(r"\bt\(`([^`]+)`", text) if "${" not in k}
    for shell in (WEB / "templates").glob("*.html"):
        found |= set(re.findall(r"\{\{\s*([a-z0-9_.]+)\s*\}\}", shell.read_text(encoding="utf-8")))
    pages = (WEB / "pages.py").read_text(encoding="utf-8")
    found |= {k for k in re.findall(r'"((?:login|agent|wallboard)\.[a-z_.]+)"', pages) if not k.endswith(".html")}
    return found


def test_both_languages_have_the_same_words_with_the_same_placeholders() -> None:
    assert set(i18n.LANGUAGES) == {"ru", "en"}
    ru, en = i18n.CATALOGUE["ru"], i18n.CATALOGUE["en"]
    assert set(ru) == set(en), set(ru) ^ set(en)
    for key in ru:
        assert ru[key].strip() and en[key].strip(), key
        assert set(PLACEHOLDER.findall(ru[key])) == set(PLACEHOLDER.findall(en[key])), key


def test_every_word_the_pages_use_is_in_the_catalogues() -> None:
    used = _used_keys()
    assert len(used) > 100
    assert used - set(i18n.CATALOGUE["en"]) == set()


@pytest.mark.parametrize("prefix, codes", [
    ("state", (*AGENT_STATES, "unknown", "none")),
    ("outcome", OUTCOMES),
    ("pause_reason", WebSettings().pause_reasons),
    ("case_status", CASE_STATUSES),
    ("meaning", (YES, NO, OPERATOR, NO_INPUT, NOT_UNDERSTOOD)),
    ("ended", ("completed", "answered_elsewhere", "no_answer", "dumped", "abandoned", "left", "hangup", "lost")),
    ("abandon_reason", ("abandon", "timeout", "leaveempty", "leaveunavail", "withdraw", "left")),
    ("handover", ("operator", "declined", "not_understood", "time_limit", "not_helped", "needs_person")),
    ("role_kind", ("private", "employee", "director")),
    ("role", ("agent", "supervisor", "admin")),
    ("step", ("role", "offer", "helped", "open_question", "rating", "answer", "goodbye", "transfer")),
])
def test_every_code_the_server_sends_has_a_word_a_supervisor_uses(prefix: str, codes: tuple[str, ...]) -> None:
    for language, words in i18n.CATALOGUE.items():
        missing = [code for code in codes if f"{prefix}.{code}" not in words]
        assert missing == [], (language, prefix, missing)
    assert i18n.translate("ru", "state.in_call") == "Разговор" and i18n.translate("en", "state.in_call") == "On a call"


def test_the_shipped_queues_and_lines_have_names() -> None:
    config = load_config(None, environ={})
    for language in i18n.LANGUAGES:
        assert all(f"queue.{q}" in i18n.CATALOGUE[language] for q in demo_queues(config))
        assert all(f"line.{line.name}" in i18n.CATALOGUE[language] for line in config.lines)


def test_placeholders_are_filled_and_a_missing_key_reads_as_itself() -> None:
    assert i18n.translate("en", "queue.waiting", n=3) == "Waiting: 3"
    assert i18n.translate("ru", "login.error.throttled", seconds=4).endswith("через 4 с.")
    assert i18n.translate("en", "no.such.key") == "no.such.key"


@pytest.mark.parametrize("header, expected", [
    ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", ["ru", "ru", "en", "en"]),
    ("en-US;q=0.5, ru;q=0.8", ["ru", "en"]),
    ("de, *;q=0.1", ["de"]),
    ("fr;q=0, en", ["en"]),
    ("", []),
    ("garbage;;;, ,en;q=abc", []),
])
def test_accept_language_is_read_in_order_of_preference(header: str, expected: list[str]) -> None:
    assert i18n.from_header(header) == expected


@pytest.mark.parametrize("headers, cookie, default, expected", [
    ({"Accept-Language": "en-GB,en;q=0.9"}, None, "ru", "en"),
    ({"Accept-Language": "de-DE,ru;q=0.5"}, None, "en", "ru"),  # the first one there is a catalogue for
    ({"Accept-Language": "de-DE"}, None, "en", "en"),  # none: the centre's setting
    ({}, None, "ru", "ru"),
    ({"Accept-Language": "ru"}, "en", "ru", "en"),  # the user's own choice wins
    ({"Accept-Language": "ru"}, "xx", "en", "ru"),  # a cookie naming no catalogue is ignored
])
def test_a_request_gets_the_user_s_then_the_browser_s_then_the_centre_s_language(headers, cookie, default,
                                                                               expected) -> None:
    if cookie is not None:
        headers = {**headers, "Cookie": f"{i18n.COOKIE}={cookie}"}
    assert i18n.choose(make_mocked_request("GET", "/agent", headers=headers), default) == expected


@pytest.mark.parametrize("text, message", [
    ("web:\n  language: de\n", "line 2: language must be ru or en, got 'de'"),
    ("web:\n  pause_reasons: []\n", "line 2: pause_reasons: a list of words or short phrases, one at least"),
    ("web:\n  pause_reasons: [break, '  ']\n", "line 2: pause_reasons"),
])
def test_a_wrong_language_or_pause_reason_list_is_reported_with_its_line(tmp_path, text, message) -> None:
    from ivr.config import ConfigError

    path = tmp_path / "ivr.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, environ={})


def test_the_centre_chooses_its_language_and_pause_reasons(tmp_path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("web:\n  language: en\n  pause_reasons: [break, обучение новичков]\n", encoding="utf-8")
    web = load_config(path, environ={}).web
    assert web.language == "en" and web.pause_reasons == ("break", "обучение новичков")
    assert WebSettings().language == "ru"
