"""conffile: YAML that remembers its lines, and errors that name file and line.

An administrator who breaks a file must be told where: every mapping and list
keeps the line it starts on (and a mapping the line of each key), and syntax
errors, duplicate keys and impossible dates become a ConfigError carrying the
file and the line of the mistake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conffile import (
    ConfigError,
    LineDict,
    LineList,
    did_you_mean,
    line_of,
    load_yaml,
    parse_yaml,
    reject_unknown_keys,
)

DOCUMENT = """\
# a comment, then a blank line

server:
  host: 127.0.0.1
  ports:
    - 4573
    - 4574
  lines:
    - name: general
      language: ru

    - name: b2b
schedule: {open: "09:00", close: "18:00"}
holidays: [01-01, 01-07]
"""


@pytest.fixture
def document() -> LineDict:
    return parse_yaml(DOCUMENT, "ivr.yaml")


# -- lines of what was loaded ---------------------------------------------------


def test_mapping_knows_the_line_it_starts_on_and_the_line_of_each_key(document: LineDict) -> None:
    assert isinstance(document, LineDict)
    assert document.line == 3  # comments and blank lines before it are counted
    assert document.line_of("server") == 3
    assert document.line_of("schedule") == 13
    assert document.line_of("holidays") == 14
    server = document["server"]
    assert isinstance(server, LineDict)
    assert server.line == 4
    assert [server.line_of(key) for key in ("host", "ports", "lines")] == [4, 5, 8]


def test_list_knows_its_line_and_its_mappings_know_theirs(document: LineDict) -> None:
    ports = document["server"]["ports"]
    assert isinstance(ports, LineList)
    assert ports == [4573, 4574]
    assert ports.line == 6
    lines = document["server"]["lines"]
    assert lines.line == 9
    assert [entry.line for entry in lines] == [9, 12]  # the blank line 11 is counted too
    assert lines[0].line_of("language") == 10


def test_flow_style_mappings_and_lists_have_lines_too(document: LineDict) -> None:
    assert document["schedule"].line == 13
    assert document["schedule"].line_of("close") == 13
    assert document["holidays"].line == 14


def test_line_of_answers_for_nodes_keys_and_plain_values(document: LineDict) -> None:
    server = document["server"]
    assert line_of(document) == 3
    assert line_of(server) == 4
    assert line_of(server, "lines") == 8
    assert line_of(server["ports"]) == 6
    assert line_of(server, "no-such-key") == 4  # falls back to the mapping's own line
    assert line_of("127.0.0.1") is None
    assert line_of(None) is None
    assert line_of({"plain": "dict"}, "plain") is None


def test_loaded_values_are_still_ordinary_dicts_and_lists(document: LineDict) -> None:
    assert document["server"]["host"] == "127.0.0.1"
    assert document["server"]["lines"][1] == {"name": "b2b"}
    assert document["schedule"] == {"open": "09:00", "close": "18:00"}
    assert parse_yaml("", "empty.yaml") is None
    assert parse_yaml("just text", "scalar.yaml") == "just text"


def test_real_dates_are_read_as_dates() -> None:
    data = parse_yaml("leap: 2024-02-29\nwhen: 2026-12-31 10:30:00\n", "dates.yaml")
    assert data["leap"] == dt.date(2024, 2, 29)
    assert data["when"] == dt.datetime(2026, 12, 31, 10, 30)


# -- errors with file and line --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("a: 1\nb: c: d\n", 2, id="mapping-value-in-a-value"),
        pytest.param("a:\n  b: 1\n c: 2\n", 3, id="bad-indentation"),
        pytest.param("a: 1\nb: [1, 2\nc: 3\n", 3, id="unclosed-flow-list"),
        pytest.param("a: 1\n\tb: 2\n", 2, id="tab-indentation"),
        pytest.param("a: 1\nb: *nowhere\n", 2, id="undefined-alias"),
        pytest.param("a: 1\nb: 2\nc: \"not closed\n", 4, id="unterminated-string"),
    ],
)
def test_syntax_error_names_the_file_and_the_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "conf/ivr.yaml")
    assert caught.value.source == "conf/ivr.yaml"
    assert caught.value.line == line
    assert str(caught.value).startswith(f"conf/ivr.yaml, line {line}: ")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        pytest.param("region: RU\ntimezone: UTC\nregion: DE\n", 3, "region", id="top-level"),
        pytest.param("agi:\n  host: a\n  port: 1\n  host: b\nami: {}\n", 4, "host", id="nested"),
        pytest.param("lines:\n  - name: a\n  - {name: b, language: ru, name: c}\n", 3, "name", id="flow"),
        pytest.param("a: 1\n'a': 2\n", 2, "a", id="quoted-and-plain"),
    ],
)
def test_duplicate_key_is_an_error_at_its_second_line(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "dup.yaml")
    assert caught.value.line == line
    assert repr(key) in caught.value.message
    assert "twice" in caught.value.message


def test_the_same_key_in_different_mappings_is_not_a_duplicate() -> None:
    data = parse_yaml("a: {name: x}\nb: {name: y}\nlist:\n  - name: x\n  - name: x\n", "ok.yaml")
    assert data["a"]["name"] == "x"
    assert [item["name"] for item in data["list"]] == ["x", "x"]


def test_keys_that_differ_as_yaml_values_are_not_duplicates() -> None:
    # The integer 1 and the string "1" are two keys in YAML (and in the dict
    # PyYAML builds); only the same value given twice is a duplicate.
    data = parse_yaml('1: one\n"1": text one\n', "keys.yaml")
    assert data == {1: "one", "1": "text one"}


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("2026-13-01", "month"),
        ("2026-02-30", "day"),
        ("2025-02-29", "day"),  # not a leap year
        ("2026-04-31 10:00:00", "day"),
    ],
)
def test_impossible_date_is_an_error_at_its_line(value: str, what: str) -> None:
    text = f"region: RU\nclosed:\n  - 01-01\n  - {value}\n"
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "routing.yaml")
    assert caught.value.source == "routing.yaml"
    assert caught.value.line == 4
    assert value in caught.value.message
    assert what in caught.value.message


# -- reading files --------------------------------------------------------------


def test_load_yaml_reads_a_file_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("# Настройки\nregion: RU\nname: «Общая»\n", encoding="utf-8")
    data = load_yaml(path)
    assert data == {"region": "RU", "name": "«Общая»"}
    assert data.line_of("name") == 3


def test_error_in_a_loaded_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("a: 1\nb: 2\nb: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}, line 3: ")


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert caught.value.source == str(path)
    assert caught.value.line is None
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_unreadable_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (who ignores chmod).
    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path)
    assert caught.value.source == str(tmp_path)
    assert "cannot read" in caught.value.message


def test_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "cp1251.yaml"
    path.write_bytes("region: RU\nname: Общая\n".encode("cp1251"))
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert caught.value.source == str(path)
    assert "UTF-8" in caught.value.message


def test_config_error_reads_with_and_without_a_line() -> None:
    assert str(ConfigError("a.yaml", 7, "bad")) == "a.yaml, line 7: bad"
    assert str(ConfigError("a.yaml", None, "bad")) == "a.yaml: bad"
    error = ConfigError("a.yaml", 7, "bad")
    assert (error.source, error.line, error.message) == ("a.yaml", 7, "bad")
    assert isinstance(error, ValueError)


# -- suggestions and unknown keys ----------------------------------------------


def test_did_you_mean_suggests_the_closest_choice() -> None:
    assert did_you_mean("segmnt", ["segment", "role", "line"]) == "; did you mean 'segment'?"
    assert did_you_mean("prot", {"port", "host"}) == "; did you mean 'port'?"


def test_did_you_mean_is_empty_without_a_close_choice() -> None:
    assert did_you_mean("zzzz", ["segment", "role"]) == ""
    assert did_you_mean("anything", []) == ""
    assert did_you_mean(42, ["segment"]) == ""


def test_reject_unknown_keys_accepts_known_keys() -> None:
    mapping = parse_yaml("host: a\nport: 1\n", "agi.yaml")
    assert reject_unknown_keys(mapping, ["host", "port", "workers"], "agi.yaml", "setting") is None


def test_reject_unknown_keys_points_at_the_first_unknown_key_and_suggests() -> None:
    mapping = parse_yaml("host: a\n\nprot: 1\nwrkers: 2\n", "agi.yaml")
    with pytest.raises(ConfigError) as caught:
        reject_unknown_keys(mapping, ["host", "port", "workers"], "agi.yaml", "setting")
    assert caught.value.line == 3
    assert caught.value.message == "unknown setting 'prot'; did you mean 'port'?"


def test_reject_unknown_keys_lists_the_choices_when_nothing_is_close() -> None:
    mapping = parse_yaml("host: a\nqqq: 1\n", "agi.yaml")
    with pytest.raises(ConfigError) as caught:
        reject_unknown_keys(mapping, ["host", "port"], "agi.yaml", "setting")
    assert caught.value.line == 2
    assert caught.value.message == "unknown setting 'qqq'; expected one of: host, port"


def test_reject_unknown_keys_prefers_a_hint_for_a_known_mistake() -> None:
    mapping = parse_yaml("queue: x\npriorty: 5\n", "rules.yaml")
    hints = {"priorty": "is spelt 'priority'"}
    with pytest.raises(ConfigError) as caught:
        reject_unknown_keys(mapping, ["queue", "priority"], "rules.yaml", "action", hints=hints)
    assert caught.value.line == 2
    assert caught.value.message == "'priorty' is spelt 'priority'"


def test_reject_unknown_keys_without_a_matching_hint_still_suggests() -> None:
    mapping = parse_yaml("queue: x\npriorty: 5\n", "rules.yaml")
    with pytest.raises(ConfigError) as caught:
        reject_unknown_keys(mapping, ["queue", "priority"], "rules.yaml", "action", hints={"other": "no"})
    assert caught.value.message == "unknown action 'priorty'; did you mean 'priority'?"


def test_reject_unknown_keys_on_a_plain_dict_gives_no_line() -> None:
    with pytest.raises(ConfigError) as caught:
        reject_unknown_keys({"prot": 1}, ["port"], "env", "setting")
    assert caught.value.line is None
    assert str(caught.value) == "env: unknown setting 'prot'; did you mean 'port'?"
