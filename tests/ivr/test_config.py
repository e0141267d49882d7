"""ivr.config: the server's one configuration file, its defaults and the environment.

The shipped file loads; no file means the embedded defaults; every mistake an
administrator can make is reported with the file and the line; relative paths
are taken from the file's directory, not from wherever the server was started;
environment variables (for containers) win over the file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import ivr.config
from conffile import ConfigError
from ivr.config import (
    DEFAULT_CONFIG,
    PROJECT_DIR,
    AgiSettings,
    AmiSettings,
    Config,
    Line,
    LookupSettings,
    PromptSettings,
    load_config,
    resolve_database_url,
)

SQLITE = "sqlite+aiosqlite:///"


def write(directory: Path, text: str, name: str = "ivr.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- the shipped file and the defaults -----------------------------------------


def test_shipped_config_loads() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.source == str(DEFAULT_CONFIG)
    assert config.region == "RU"
    assert config.timezone == "Europe/Moscow"
    assert [line.name for line in config.lines] == ["general", "b2b", "b2c"]
    assert config.default_line == "general"
    assert config.line_for(None).name == "general"
    assert config.rules_file.is_file() and config.rules_file.name == "routing.yaml"
    assert config.intents_file.is_file() and config.intents_file.name == "intents.yaml"
    assert config.redis_url is None
    assert config.ami.host is None and config.ami.secret is None
    assert config.agi.port == 4573
    assert "127.0.0.1" in config.agi.allowed_hosts
    assert {"ru", "en"} <= set(config.announcements["after_hours"])


def test_shipped_config_keeps_its_files_next_to_the_project(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a server started from elsewhere finds the same files
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.database_url.startswith(SQLITE)
    database = Path(config.database_url[len(SQLITE):])
    assert database.is_absolute()
    assert database.resolve().parent == (PROJECT_DIR / "var").resolve()
    assert config.prompts.directory.resolve() == (PROJECT_DIR / "var" / "prompts").resolve()
    assert config.rules_file.resolve() == (PROJECT_DIR / "config" / "routing.yaml").resolve()


def test_without_a_path_the_shipped_file_is_used() -> None:
    assert load_config(None, environ={}).source == str(DEFAULT_CONFIG)


def test_ivr_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "region: DE\n")
    config = load_config(None, environ={"IVR_CONFIG": str(path)})
    assert config.source == str(path)
    assert config.region == "DE"


def test_an_explicit_path_wins_over_ivr_config(tmp_path: Path) -> None:
    chosen = write(tmp_path / "a", "region: DE\n")
    other = write(tmp_path / "b", "region: FR\n")
    assert load_config(chosen, environ={"IVR_CONFIG": str(other)}).region == "DE"


def test_the_process_environment_is_used_when_none_is_given(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, "region: DE\n")
    monkeypatch.setenv("IVR_CONFIG", str(path))
    monkeypatch.setenv("IVR_AGI_PORT", "4999")
    config = load_config()
    assert (config.region, config.agi.port) == ("DE", 4999)


def test_no_file_at_all_gives_the_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ivr.config, "DEFAULT_CONFIG", tmp_path / "not-shipped.yaml")
    config = load_config(None, environ={})
    assert config == Config()
    assert config.source == "<defaults>"
    assert config.agi == AgiSettings() and config.ami == AmiSettings()
    assert config.lookup == LookupSettings() and config.prompts == PromptSettings()
    assert config.lines == (Line(name="general"),)
    assert config.line_for("anything").name == "general"


@pytest.mark.parametrize("text", ["", "# every setting left out\n"])
def test_an_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    config = load_config(path, environ={})
    assert config.source == str(path)
    assert config.agi == AgiSettings()
    assert config.lines == Config().lines
    assert config.database_url == Config().database_url


def test_settings_from_the_file_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        agi:
          port: 4600
          allowed_hosts: 10.0.0.5        # one host without a list
          env_timeout: 2                 # a whole number for a float
        lookup:
          cache_entries: 500
        prompts:
          enabled: false
          voices: {ru: zle/ru}
        lines:
          - name: general
            numbers: [74955550100, "+74955550101"]
            default_priority: 3
    """)
    config = load_config(path, environ={})
    assert config.agi.port == 4600
    assert config.agi.allowed_hosts == ("10.0.0.5",)
    assert config.agi.env_timeout == 2.0 and isinstance(config.agi.env_timeout, float)
    assert config.lookup.cache_entries == 500
    assert config.prompts.enabled is False
    assert config.prompts.voices == {"ru": "zle/ru"}
    assert config.lines[0].numbers == ("74955550100", "+74955550101")
    assert config.lines[0].default_priority == 3


# -- broken files: the file and the line -----------------------------------------


BROKEN = {
    "unknown-top-level-key": (
        """\
        region: RU
        timezone: Europe/Moscow
        databse_url: sqlite+aiosqlite:///crm.sqlite3
        """, 3, "unknown setting 'databse_url'; did you mean 'database_url'?"),
    "unknown-key-in-agi": (
        """\
        agi:
          host: 127.0.0.1
          prot: 4573
        """, 3, "unknown setting 'prot'; did you mean 'port'?"),
    "unknown-key-in-lookup": (
        """\
        region: RU
        lookup:
          timeout: 0.2
          cache_tll: 60
        """, 4, "unknown setting 'cache_tll'; did you mean 'cache_ttl'?"),
    "unknown-key-in-prompts": (
        """\
        prompts:
          directory: prompts
          voice: {ru: zle/ru}
        """, 3, "unknown setting 'voice'; did you mean 'voices'?"),
    "unknown-key-in-a-line": (
        """\
        lines:
          - name: general
            languge: ru
        """, 3, "unknown line setting 'languge'; did you mean 'language'?"),
    "port-as-text": (
        """\
        agi:
          host: 127.0.0.1
          port: "4573"
        """, 3, "port: expected int"),
    "float-as-text": (
        """\
        lookup:
          timeout: fast
        """, 2, "timeout: expected float"),
    "bool-as-text": (
        """\
        prompts:
          rate: 150
          enabled: "yes"
        """, 3, "enabled: expected bool"),
    "int-as-bool": (
        """\
        agi:
          workers: true
        """, 2, "workers: expected int"),
    "section-not-a-mapping": (
        """\
        region: RU
        agi: 4573
        """, 2, "expected a mapping of AgiSettings settings"),
    "region-as-a-list": (
        """\
        region: [RU, DE]
        """, 1, "region: expected str"),
    "lines-not-a-list": (
        """\
        region: RU
        lines: general
        """, 2, "lines must be a non-empty list"),
    "lines-empty": (
        """\
        region: RU
        lines: []
        """, 2, "lines must be a non-empty list"),
    "line-without-a-name": (
        """\
        lines:
          - name: general
          - numbers: ["+74955550200"]
            language: ru
        """, 3, "each line needs at least a name"),
    "line-name-not-text": (
        """\
        lines:
          - name: general
          - name: [b2b]
        """, 3, "name: expected str"),
    "unknown-role-in-a-line": (
        """\
        lines:
          - name: general
          - name: b2b
            language: ru
            roles: [employee, directr]
        """, 5, "unknown role 'directr'"),
    "default-line-not-among-lines": (
        """\
        lines:
          - name: general
          - name: b2b
        default_line: b2c
        """, 4, "default_line 'b2c' is not one of the lines"),
    "empty-database-url": (
        """\
        region: RU
        database_url:
        """, 2, "database_url cannot be empty"),
    "empty-agi-port": (
        """\
        agi:
          host: 127.0.0.1
          port:
        """, 3, "port cannot be empty"),
    "rules-file-not-a-path": (
        """\
        rules_file: 42
        """, 1, "rules_file must be a path"),
    "announcement-without-texts": (
        """\
        announcements:
          after_hours:
            ru: Мы закрыты.
          b2b_closed: Закрыто
        """, 4, "announcement 'b2b_closed'"),
    "file-not-a-mapping": (
        """\
        - region: RU
        """, 1, "the file must be a mapping of settings"),
    "yaml-syntax-error": (
        """\
        region: RU
        agi:
          host: 127.0.0.1
         port: 4573
        """, 4, ""),
    "duplicate-key": (
        """\
        region: RU
        timezone: UTC
        region: DE
        """, 3, "'region' is given twice"),
    "nps-bands-crossed": (
        """        reports:
          nps_promoter: 6
          nps_detractor: 7
        """, 3, "NPS bands: 0 <= nps_detractor < nps_promoter <= 10"),
    "negative-short-abandon": (
        """        reports:
          short_abandon_seconds: -5
        """, 2, "short_abandon_seconds cannot be negative"),
    "survey-mode-unknown": (
        """        lines:
          - name: general
            survey: stars
        """, 3, "survey must be one of csat, nps, both, off, got 'stars'"),
}


@pytest.mark.parametrize(("text", "line", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_names_the_file_and_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == str(path)
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path}, line {line}: ")


def test_duplicate_line_names_point_at_the_second_one(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        default_line: general
        lines:
          - name: general
            language: ru
          - name: b2b
          - name: general
            language: en
    """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == str(path)
    assert "line 'general' is defined twice (first at line 3)" in caught.value.message
    # Line 6 repeats the name of line 3; line 2 (`lines:`) is not where the mistake is.
    assert caught.value.line == 6


def test_a_broken_file_is_reported_even_with_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "agi:\n  prot: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"IVR_AGI_PORT": "4573", "IVR_DATABASE_URL": "sqlite+aiosqlite:///:memory:"})
    assert caught.value.line == 2


def test_missing_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"IVR_CONFIG": str(path)})
    assert caught.value.source == str(path)


# -- relative paths -------------------------------------------------------------


def test_relative_paths_are_taken_from_the_files_directory(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site" / "etc"
    path = write(site, """\
        database_url: sqlite+aiosqlite:///../data/crm.sqlite3
        rules_file: rules/routing.yaml
        intents_file: ./intents.yaml
        prompts:
          directory: ../prompts
          asterisk_directory: sounds/ivr
    """)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = load_config(path, environ={})
    assert config.rules_file == site / "rules" / "routing.yaml"
    assert config.intents_file == site / "intents.yaml"
    assert config.prompts.directory.resolve() == (tmp_path / "site" / "prompts").resolve()
    assert config.prompts.asterisk_directory == site / "sounds" / "ivr"
    assert config.database_url.startswith(SQLITE)
    database = Path(config.database_url[len(SQLITE):])
    assert database.is_absolute()
    assert database.resolve() == (tmp_path / "site" / "data" / "crm.sqlite3").resolve()


def test_a_config_named_by_a_relative_path_still_resolves_against_its_directory(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "etc", "rules_file: routing.yaml\ndatabase_url: sqlite+aiosqlite:///crm.sqlite3\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/ivr.yaml", environ={})
    assert config.rules_file.resolve() == (tmp_path / "etc" / "routing.yaml").resolve()
    assert Path(config.database_url[len(SQLITE):]).resolve() == (tmp_path / "etc" / "crm.sqlite3").resolve()


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "etc", f"""\
        database_url: postgresql+asyncpg://ivr:secret@db.example/ivr
        rules_file: {tmp_path}/rules.yaml
        prompts:
          directory: /var/lib/ivr/prompts
    """)
    config = load_config(path, environ={})
    assert config.database_url == "postgresql+asyncpg://ivr:secret@db.example/ivr"
    assert config.rules_file == tmp_path / "rules.yaml"
    assert config.prompts.directory == Path("/var/lib/ivr/prompts")


def test_home_directory_in_a_path_is_expanded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path / "etc", "rules_file: ~/routing.yaml\n")
    assert load_config(path, environ={}).rules_file == tmp_path / "home" / "routing.yaml"


@pytest.mark.parametrize(
    "url",
    [
        f"{SQLITE}/srv/ivr/crm.sqlite3",
        f"{SQLITE}:memory:",
        "postgresql+asyncpg://ivr@127.0.0.1:5432/ivr",
    ],
)
def test_resolve_database_url_leaves_absolute_memory_and_server_urls(url: str, tmp_path: Path) -> None:
    assert resolve_database_url(url, tmp_path) == url


def test_resolve_database_url_makes_a_relative_sqlite_file_absolute(tmp_path: Path) -> None:
    assert resolve_database_url(f"{SQLITE}var/crm.sqlite3", tmp_path) == f"{SQLITE}{tmp_path}/var/crm.sqlite3"


# -- the environment wins -------------------------------------------------------


FILE_WITH_EVERYTHING = """\
    database_url: sqlite+aiosqlite:///from-file.sqlite3
    redis_url: redis://file:6379/0
    agi:
      host: 10.1.1.1
      port: 4000
      allowed_hosts: [10.1.1.2]
      workers: 2
    ami:
      host: file-ami
      port: 5000
      username: file-user
      secret: file-secret
    prompts:
      directory: file-prompts
"""


@pytest.fixture
def everything(tmp_path: Path) -> Path:
    return write(tmp_path / "etc", FILE_WITH_EVERYTHING)


OVERRIDES = [
    ("IVR_DATABASE_URL", "postgresql+asyncpg://env@db/ivr", lambda c: c.database_url,
     "postgresql+asyncpg://env@db/ivr"),
    ("IVR_REDIS_URL", "redis://env:6380/1", lambda c: c.redis_url, "redis://env:6380/1"),
    ("IVR_REDIS_URL", "", lambda c: c.redis_url, None),
    ("IVR_AGI_HOST", "0.0.0.0", lambda c: c.agi.host, "0.0.0.0"),
    ("IVR_AGI_PORT", "4999", lambda c: c.agi.port, 4999),
    ("IVR_AGI_ALLOWED_HOSTS", "172.16.0.10, 10.0.0.0/8,,", lambda c: c.agi.allowed_hosts,
     ("172.16.0.10", "10.0.0.0/8")),
    ("IVR_AGI_WORKERS", "4", lambda c: c.agi.workers, 4),
    ("IVR_PROMPTS_DIR", "/srv/prompts", lambda c: c.prompts.directory, Path("/srv/prompts")),
    ("IVR_MODEL_FILE", "/srv/model.joblib", lambda c: c.prediction.model_file, Path("/srv/model.joblib")),
    ("IVR_AMI_HOST", "asterisk", lambda c: c.ami.host, "asterisk"),
    ("IVR_AMI_HOST", "", lambda c: c.ami.host, None),
    ("IVR_AMI_PORT", "5039", lambda c: c.ami.port, 5039),
    ("IVR_AMI_USERNAME", "env-user", lambda c: c.ami.username, "env-user"),
    ("IVR_AMI_SECRET", "env-secret", lambda c: c.ami.secret, "env-secret"),
]


@pytest.mark.parametrize(
    ("name", "value", "setting", "expected"), OVERRIDES,
    ids=[f"{name}={value!r}" for name, value, _, _ in OVERRIDES],
)
def test_environment_variable_wins_over_the_file(everything: Path, name: str, value: str, setting,
                                                 expected) -> None:
    from_file = load_config(everything, environ={})
    assert setting(from_file) != expected
    assert setting(load_config(everything, environ={name: value})) == expected


def test_environment_changes_only_what_it_names(everything: Path) -> None:
    config = load_config(everything, environ={"IVR_AGI_PORT": "4999", "IVR_AMI_USERNAME": "env-user"})
    assert config.agi.port == 4999
    assert config.agi.host == "10.1.1.1"
    assert config.agi.allowed_hosts == ("10.1.1.2",)
    assert config.agi.workers == 2
    assert config.ami.username == "env-user"
    assert (config.ami.host, config.ami.port, config.ami.secret) == ("file-ami", 5000, "file-secret")
    assert config.redis_url == "redis://file:6379/0"
    assert config.database_url == f"{SQLITE}{everything.parent}/from-file.sqlite3"


def test_environment_applies_to_the_defaults_too(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ivr.config, "DEFAULT_CONFIG", tmp_path / "not-shipped.yaml")
    config = load_config(None, environ={"IVR_DATABASE_URL": "sqlite+aiosqlite:///:memory:", "IVR_AMI_HOST": "pbx"})
    assert config.source == "<defaults>"
    assert config.database_url == "sqlite+aiosqlite:///:memory:"
    assert config.ami.host == "pbx"


def test_ami_secret_file_is_read_and_stripped(everything: Path, tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cr3t-from-file\n", encoding="utf-8")
    config = load_config(everything, environ={"IVR_AMI_SECRET_FILE": str(secret)})
    assert config.ami.secret == "s3cr3t-from-file"


def test_ami_secret_file_wins_over_ami_secret(everything: Path, tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("from-file", encoding="utf-8")
    environ = {"IVR_AMI_SECRET_FILE": str(secret), "IVR_AMI_SECRET": "from-variable"}
    assert load_config(everything, environ=environ).ami.secret == "from-file"


def test_empty_ami_secret_file_variable_is_ignored(everything: Path) -> None:
    environ = {"IVR_AMI_SECRET_FILE": "", "IVR_AMI_SECRET": "from-variable"}
    assert load_config(everything, environ=environ).ami.secret == "from-variable"


def test_ami_secret_is_not_shown_in_the_repr(everything: Path) -> None:
    config = load_config(everything, environ={"IVR_AMI_SECRET": "do-not-print-me"})
    assert "do-not-print-me" not in repr(config)
    assert "do-not-print-me" not in repr(config.ami)


def test_missing_ami_secret_file_is_a_config_error_naming_it(everything: Path, tmp_path: Path) -> None:
    secret = tmp_path / "no-such.secret"
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={"IVR_AMI_SECRET_FILE": str(secret)})
    assert caught.value.source == str(secret)
    assert "AMI secret" in caught.value.message


def test_unreadable_ami_secret_file_is_a_config_error(everything: Path, tmp_path: Path) -> None:
    # A directory cannot be read, even by root.
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={"IVR_AMI_SECRET_FILE": str(tmp_path)})
    assert caught.value.source == str(tmp_path)


def test_binary_ami_secret_file_is_a_config_error(everything: Path, tmp_path: Path) -> None:
    # `head -c 32 /dev/urandom > ami.secret` is a common way to make a secret;
    # it must be reported like any other unreadable secret file, not crash.
    secret = tmp_path / "ami.secret"
    secret.write_bytes(b"\xf1\x80\x00\xff\xfe-binary")
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={"IVR_AMI_SECRET_FILE": str(secret)})
    assert caught.value.source == str(secret)


@pytest.mark.parametrize("value", ["abc", "", "45.73", "4573/tcp"])
def test_agi_port_that_is_not_a_number_is_a_config_error(everything: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={"IVR_AGI_PORT": value})
    assert "IVR_AGI_PORT" in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", ["70000", "-1"])
def test_agi_port_outside_the_tcp_range_is_a_config_error(everything: Path, value: str) -> None:
    # Otherwise `ivr run` dies in bind() with an OverflowError traceback.
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={"IVR_AGI_PORT": value})
    assert "IVR_AGI_PORT" in str(caught.value)


@pytest.mark.parametrize("name", ["IVR_AGI_WORKERS", "IVR_AMI_PORT"])
def test_other_numeric_variables_must_be_numbers(everything: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(everything, environ={name: "many"})
    assert name in str(caught.value)


# -- which line a call is for ---------------------------------------------------


@pytest.fixture
def shipped() -> Config:
    return load_config(DEFAULT_CONFIG, environ={})


@pytest.mark.parametrize(
    ("called", "line"),
    [
        ("general", "general"),
        ("b2b", "b2b"),
        ("b2c", "b2c"),
        ("+74955550200", "b2b"),
        ("74955550200", "b2b"),
        ("+74955550300", "b2c"),
        ("74955550100", "general"),
        (None, "general"),
        ("", "general"),
        ("unknown-line", "general"),
        ("+74955550999", "general"),
    ],
)
def test_line_for_finds_the_line_by_name_or_dialled_number(shipped: Config, called: str | None, line: str) -> None:
    assert shipped.line_for(called).name == line


def test_line_for_matches_numbers_written_without_plus(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        default_line: support
        lines:
          - name: sales
            numbers: ["74955550400", 88005553535]
          - name: support
    """)
    config = load_config(path, environ={})
    assert config.line_for("+74955550400").name == "sales"
    assert config.line_for("74955550400").name == "sales"
    assert config.line_for("88005553535").name == "sales"
    # The default is the named default line, not simply the first one.
    assert config.line_for("+70000000000").name == "support"
    assert config.line_for(None).name == "support"


def test_line_settings_come_from_the_file(shipped: Config) -> None:
    b2b = shipped.line_for("b2b")
    assert b2b.default_queue == "b2b"
    assert b2b.roles == ("employee", "director")
    assert shipped.line_for("b2c").roles == ("private",)
    assert shipped.line_for("general").roles == ("private", "employee", "director")


# -- self-service, speech and web settings ----------------------------------------------


def test_speech_and_web_settings_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "site", """\
        speech:
          models: {ru: ../models/vosk-ru, en: /opt/vosk-en}
          dialog_file: my-dialog.yaml
          audiosocket_port: 9100
          audiosocket_address: 10.0.0.5:9100
        web:
          port: 8443
          secure_cookies: true
        lines:
          - {name: general, self_service: dtmf}
          - {name: quiet, self_service: "off"}
        """)
    config = load_config(path, environ={})
    assert config.speech.models == {"ru": str((tmp_path / "models" / "vosk-ru").resolve()), "en": "/opt/vosk-en"}
    assert config.speech.dialog_file == (tmp_path / "site" / "my-dialog.yaml").resolve()
    assert (config.speech.audiosocket_port, config.speech.audiosocket_address) == (9100, "10.0.0.5:9100")
    assert (config.web.port, config.web.secure_cookies, config.web.host) == (8443, True, "127.0.0.1")
    assert [line.self_service for line in config.lines] == ["dtmf", "off"]


def test_a_wrong_self_service_mode_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        lines:
          - name: general
            self_service: voice
        """)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.line == 3 and "self_service must be one of speech, dtmf, off" in str(error.value)


def test_speech_and_web_environment(tmp_path: Path) -> None:
    config = load_config(None, environ={
        "IVR_SPEECH_MODELS": "ru=/opt/vosk-ru, en=/opt/vosk-en", "IVR_AUDIOSOCKET_PORT": "9200",
        "IVR_AUDIOSOCKET_ADDRESS": "172.28.0.20:9200", "IVR_AUDIOSOCKET_ALLOWED_HOSTS": "172.28.0.10, 10.0.0.0/8",
        "IVR_WEB_HOST": "0.0.0.0", "IVR_WEB_PORT": "8081"})
    assert config.speech.models == {"ru": "/opt/vosk-ru", "en": "/opt/vosk-en"}
    assert config.speech.audiosocket_port == 9200 and config.speech.audiosocket_address == "172.28.0.20:9200"
    assert config.speech.allowed_hosts == ("172.28.0.10", "10.0.0.0/8")
    assert (config.web.host, config.web.port) == ("0.0.0.0", 8081)
    assert load_config(None, environ={"IVR_SPEECH_MODELS": ""}).speech.models == {}
    with pytest.raises(ConfigError, match="IVR_SPEECH_MODELS: expected language=path"):
        load_config(None, environ={"IVR_SPEECH_MODELS": "/opt/vosk-ru"})
    every_line = load_config(None, environ={"IVR_SELF_SERVICE": "off"})
    assert {line.self_service for line in every_line.lines} == {"off"}
    with pytest.raises(ConfigError, match="IVR_SELF_SERVICE must be one of speech, dtmf, off"):
        load_config(None, environ={"IVR_SELF_SERVICE": "voice"})
    with pytest.raises(ConfigError, match="IVR_WEB_PORT must be a TCP port"):
        load_config(None, environ={"IVR_WEB_PORT": "99999"})


# -- self-service lines, speech models, AudioSocket and web: more ------------------------------


def test_shipped_lines_default_to_speech_self_service(shipped: Config) -> None:
    # general says so in the file; b2b and b2c leave it out and get the default.
    assert [line.self_service for line in shipped.lines] == ["speech", "speech", "speech"]
    assert Line(name="x").self_service == "speech"


@pytest.mark.parametrize("written, mode", [("speech", "speech"), ("dtmf", "dtmf"), ('"off"', "off")])
def test_every_self_service_mode_loads(tmp_path: Path, written: str, mode: str) -> None:
    path = write(tmp_path, f"lines:\n  - name: general\n    self_service: {written}\n")
    assert load_config(path, environ={}).lines[0].self_service == mode


@pytest.mark.parametrize(("text", "line", "message"), [
    ("""\
     default_line: general
     lines:
       - name: general
       - {name: b2b, self_service: keypad}
     """, 4, "self_service must be one of speech, dtmf, off, got 'keypad'"),
    ("""\
     lines:
       - name: general
         language: ru
         self_service: Speech
     """, 4, "got 'Speech'"),
    ("""\
     lines:
       - name: general
         self_service: 1
     """, 3, "self_service: expected str, got 1"),
    ("""\
     lines:
       - name: general
         self_service: [speech, dtmf]
     """, 3, "self_service: expected str"),
], ids=["flow-mapping-second-line", "wrong-case", "a-number", "a-list"])
def test_a_wrong_self_service_value_names_its_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert (caught.value.source, caught.value.line) == (str(path), line)
    assert message in caught.value.message


def test_self_service_off_written_as_in_the_shipped_comment_loads(tmp_path: Path) -> None:
    """BUG (usability): config/ivr.yaml documents `self_service: speech  # speech | dtmf | off`.
    Writing `off` there without quotes is YAML's false, and the server refuses to
    start with "self_service: expected str, got False" - nothing says to quote it
    (config/dialog.yaml's loader does say so for yes/no).  Either read false as
    "off" or say to write "off" in quotes."""
    path = write(tmp_path, "lines:\n  - name: general\n    self_service: off\n")
    try:
        config = load_config(path, environ={})
    except ConfigError as error:
        assert error.line == 3
        assert "quote" in error.message, error.message
    else:
        assert config.lines[0].self_service == "off"


def test_speech_defaults() -> None:
    config = load_config(None, environ={})
    assert config.speech.models == {}
    assert config.speech.dialog_file == PROJECT_DIR / "config" / "dialog.yaml"
    assert config.speech.dialog_file.is_file()
    assert (config.speech.audiosocket_host, config.speech.audiosocket_port) == ("127.0.0.1", 9092)
    assert config.speech.audiosocket_address is None
    assert (config.web.enabled, config.web.host, config.web.port) == (True, "127.0.0.1", 8080)


def test_model_paths_are_taken_from_the_files_directory_wherever_the_server_starts(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    site = tmp_path / "site" / "etc"
    path = write(site, """\
        speech:
          models:
            ru: models/vosk-small-ru
            en: ../../shared/vosk-en
            de: ~/vosk-de
            ko: /opt/vosk-ko
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    models = load_config(path, environ={}).speech.models
    assert models == {
        "ru": str((site / "models" / "vosk-small-ru").resolve()),
        "en": str((tmp_path / "shared" / "vosk-en").resolve()),
        "de": str(tmp_path / "home" / "vosk-de"),
        "ko": "/opt/vosk-ko",
    }
    assert all(isinstance(value, str) for value in models.values())


@pytest.mark.parametrize(("text", "line", "message"), [
    ("""\
     speech:
       models: /opt/vosk-ru
     """, 2, "models: expected dict"),
    ("""\
     speech:
       models:
         ru: /opt/vosk-ru
         en: 15
     """, 2, "models: expected dict"),
    ("""\
     speech:
       models:
         ru: /opt/vosk-ru
         en: ""
     """, 4, "models.en must be a path"),
    ("""\
     speech:
       model: {ru: /opt/vosk-ru}
     """, 2, "unknown setting 'model'; did you mean 'models'?"),
    ("""\
     speech:
       audiosocket_port: 70000
     """, 2, "port must be 0..65535, got 70000"),
    ("""\
     speech:
       audiosocket_port: "9092"
     """, 2, "audiosocket_port: expected int"),
    ("""\
     speech:
       dialog_file: 5
     """, 2, "dialog_file must be a path"),
    ("""\
     web:
       host: 127.0.0.1
       prot: 8080
     """, 3, "unknown setting 'prot'; did you mean 'port'?"),
    ("""\
     web:
       port: -1
     """, 2, "port must be 0..65535, got -1"),
    ("""\
     web:
       secure_cookies: "yes"
     """, 2, "secure_cookies: expected bool"),
    ("""\
     web:
       session_ttl: forever
     """, 2, "session_ttl: expected float"),
    ("""\
     region: RU
     web: on
     """, 2, "expected a mapping of WebSettings settings"),
], ids=["models-a-path", "models-a-number", "models-empty-path", "model-misspelt", "audiosocket-port-range",
        "audiosocket-port-text", "dialog-file-number", "web-port-misspelt", "web-port-negative",
        "web-secure-cookies-text", "web-session-ttl-text", "web-not-a-mapping"])
def test_broken_speech_and_web_settings_name_their_line(tmp_path: Path, text: str, line: int,
                                                        message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert (caught.value.source, caught.value.line) == (str(path), line)
    assert message in caught.value.message


def test_the_web_section_is_typed(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        web:
          enabled: false
          host: 0.0.0.0
          port: 0
          session_ttl: 600
        speech:
          audiosocket_address:
          allowed_hosts: 10.0.0.7
          recognition_threads: 2
        """)
    config = load_config(path, environ={})
    assert (config.web.enabled, config.web.host, config.web.port, config.web.secure_cookies) == (
        False, "0.0.0.0", 0, False)
    assert config.web.session_ttl == 600.0 and isinstance(config.web.session_ttl, float)
    assert config.speech.audiosocket_address is None
    assert config.speech.allowed_hosts == ("10.0.0.7",)
    assert config.speech.recognition_threads == 2


@pytest.mark.parametrize(("value", "models"), [
    ("ru=/a,en=/b", {"ru": "/a", "en": "/b"}),
    (" ru = /opt/vosk ru , en=/b ,", {"ru": "/opt/vosk ru", "en": "/b"}),
    ("ru=/opt/vosk=small", {"ru": "/opt/vosk=small"}),  # split at the first "="
    ("ru=/a,ru=/b", {"ru": "/b"}),
    (",", {}),
    ("", {}),
])
def test_ivr_speech_models_is_parsed(value: str, models: dict[str, str]) -> None:
    assert load_config(None, environ={"IVR_SPEECH_MODELS": value}).speech.models == models


def test_ivr_speech_models_replaces_the_files_models(tmp_path: Path) -> None:
    path = write(tmp_path, "speech:\n  models: {ru: /file/ru, en: /file/en}\n  audiosocket_port: 9300\n")
    config = load_config(path, environ={"IVR_SPEECH_MODELS": "en=/env/en"})
    assert config.speech.models == {"en": "/env/en"}  # not merged: the variable names them all
    assert config.speech.audiosocket_port == 9300  # the rest of the section stays
    assert load_config(path, environ={"IVR_SPEECH_MODELS": ""}).speech.models == {}


@pytest.mark.parametrize(("value", "bad"), [
    ("/opt/vosk-ru", "/opt/vosk-ru"),  # a path without its language
    ("ru=/a,en", "en"),
    ("=/opt/vosk", "=/opt/vosk"),
    ("ru=", "ru="),
    ("ru= ,en=/b", "ru="),
])
def test_a_malformed_ivr_speech_models_item_is_named(value: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"IVR_SPEECH_MODELS": value})
    assert caught.value.source == "environment" and caught.value.line is None
    assert caught.value.message == f"IVR_SPEECH_MODELS: expected language=path[,language=path], got {bad!r}"


AUDIOSOCKET_AND_WEB = """\
    speech:
      audiosocket_host: 10.0.0.1
      audiosocket_port: 9100
      audiosocket_address: 10.0.0.1:9100
      allowed_hosts: [10.0.0.2]
    web:
      host: 10.0.0.1
      port: 8100
"""

SPEECH_AND_WEB_OVERRIDES = [
    ("IVR_AUDIOSOCKET_HOST", "0.0.0.0", lambda c: c.speech.audiosocket_host, "0.0.0.0"),
    ("IVR_AUDIOSOCKET_PORT", "9500", lambda c: c.speech.audiosocket_port, 9500),
    ("IVR_AUDIOSOCKET_PORT", "0", lambda c: c.speech.audiosocket_port, 0),
    ("IVR_AUDIOSOCKET_ADDRESS", "ivr.example:9500", lambda c: c.speech.audiosocket_address, "ivr.example:9500"),
    ("IVR_AUDIOSOCKET_ADDRESS", "", lambda c: c.speech.audiosocket_address, None),
    ("IVR_AUDIOSOCKET_ALLOWED_HOSTS", " 172.28.0.10 ,, 10.0.0.0/8", lambda c: c.speech.allowed_hosts,
     ("172.28.0.10", "10.0.0.0/8")),
    ("IVR_WEB_HOST", "0.0.0.0", lambda c: c.web.host, "0.0.0.0"),
    ("IVR_WEB_PORT", "8443", lambda c: c.web.port, 8443),
]


@pytest.mark.parametrize(
    ("name", "value", "setting", "expected"), SPEECH_AND_WEB_OVERRIDES,
    ids=[f"{name}={value!r}" for name, value, _, _ in SPEECH_AND_WEB_OVERRIDES],
)
def test_speech_and_web_variables_win_over_the_file(tmp_path: Path, name: str, value: str, setting,
                                                     expected) -> None:
    path = write(tmp_path, AUDIOSOCKET_AND_WEB)
    assert setting(load_config(path, environ={})) != expected
    config = load_config(path, environ={name: value})
    assert setting(config) == expected
    # Everything else in both sections is the file's.
    others = [(n, s) for n, _, s, _ in SPEECH_AND_WEB_OVERRIDES if n != name]
    from_file = load_config(path, environ={})
    for _, other in others:
        assert other(config) == other(from_file)


@pytest.mark.parametrize(("name", "value"), [
    ("IVR_AUDIOSOCKET_PORT", "audio"),
    ("IVR_AUDIOSOCKET_PORT", "65536"),
    ("IVR_AUDIOSOCKET_PORT", ""),
    ("IVR_WEB_PORT", "http"),
    ("IVR_WEB_PORT", "-80"),
])
def test_a_bad_audiosocket_or_web_port_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={name: value})
    assert caught.value.source == "environment"
    assert name in caught.value.message


def test_ivr_self_service_sets_every_line_and_empty_leaves_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        lines:
          - {name: general, self_service: speech}
          - {name: quiet, self_service: "off"}
        """)
    assert [line.self_service for line in load_config(path, environ={"IVR_SELF_SERVICE": "dtmf"}).lines] == [
        "dtmf", "dtmf"]
    assert [line.self_service for line in load_config(path, environ={"IVR_SELF_SERVICE": ""}).lines] == [
        "speech", "off"]


@pytest.mark.parametrize("key", ["max_megabytes", "max_age_days"])
def test_a_prompt_cache_bound_below_one_is_refused_at_its_line(tmp_path, key):
    path = tmp_path / "ivr.yaml"
    path.write_text(f"prompts:\n  rate: 160\n  {key}: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert refused.value.line == 3 and key in refused.value.message
