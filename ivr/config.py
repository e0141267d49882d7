"""The server's configuration: one YAML file, validated once, passed down.

Every setting has an embedded default, so the server runs with no file at
all (SQLite under ``var/``, in-process state).  A few settings can be given
by environment variables, which win over the file (for containers):
``IVR_DATABASE_URL``, ``IVR_REDIS_URL``, ``IVR_AGI_HOST``, ``IVR_AGI_PORT``,
``IVR_AGI_ALLOWED_HOSTS`` (comma-separated), ``IVR_AGI_WORKERS``,
``IVR_PROMPTS_DIR``, ``IVR_MODEL_FILE``, ``IVR_AMI_HOST``, ``IVR_AMI_PORT``, ``IVR_AMI_USERNAME``,
``IVR_AMI_SECRET`` / ``IVR_AMI_SECRET_FILE``, ``IVR_HEALTHZ_TOKEN``.

Relative paths in the file (SQLite files included) are taken relative to
the file's directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conffile import ConfigError, LineDict, line_of, load_yaml, reject_unknown_keys

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "config" / "ivr.yaml"


@dataclass(frozen=True)
class Line:
    """A dialled line (DNIS): its name for rules, default queue and language."""

    name: str
    numbers: tuple[str, ...] = ()
    default_queue: str = "support"
    default_priority: int = 0
    language: str = "ru"
    # Roles this line is for; a caller with several roles is asked only
    # when more than one of their roles fits the line.
    roles: tuple[str, ...] = ("private", "employee", "director")
    # The self-service dialog before routing: "speech" (Vosk over
    # AudioSocket; DTMF when no model is usable), "dtmf" (keys only) or "off".
    self_service: str = "speech"
    # The post-call survey (FastAGI script `survey`, after a self-served call and after the agent hangs
    # up): "csat" (1-5), "nps" (0-10), "both" or "off".
    survey: str = "off"


@dataclass(frozen=True)
class AgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    workers: int = 1
    env_timeout: float = 5.0
    command_timeout: float = 10.0
    # How long the whole decision may take before the call is sent on
    # with whatever is known (the dialplan default at worst).
    decision_budget: float = 1.5


@dataclass(frozen=True)
class AmiSettings:
    host: str | None = None  # None: no AMI connection
    port: int = 5038
    username: str = "ivr"
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LookupSettings:
    timeout: float = 0.15
    cache_ttl: float = 300.0
    negative_ttl: float = 60.0
    cache_entries: int = 100_000
    version_poll: float = 2.0


@dataclass(frozen=True)
class PromptSettings:
    directory: Path = Path("var/prompts")
    # Where Asterisk finds the same files (shared volume); STREAM FILE gets
    # this path.  Defaults to `directory` (Asterisk on the same host).
    asterisk_directory: Path | None = None
    # eSpeak NG voice per language; empty: the synthesizer's defaults.
    voices: dict[str, str] = field(default_factory=dict)
    rate: int = 160
    enabled: bool = True
    max_megabytes: int = 256  # the prompt directory's size; the least recently used files go first
    max_age_days: int = 30  # a prompt unused this long is removed


@dataclass(frozen=True)
class SpeechSettings:
    """Recognition and the AudioSocket server of the self-service dialog."""

    # Vosk model directory per language; a dialog in a language without a
    # usable model runs in DTMF mode.
    models: dict[str, str] = field(default_factory=dict)
    dialog_file: Path = PROJECT_DIR / "config" / "dialog.yaml"
    audiosocket_host: str = "127.0.0.1"  # where the AudioSocket server listens
    audiosocket_port: int = 9092
    # host:port Asterisk connects to (EXEC AudioSocket); default: the listening address
    audiosocket_address: str | None = None
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    recognition_threads: int = 0  # 0: one per core


@dataclass(frozen=True)
class WebSettings:
    """The agents' and supervisors' web application."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    session_ttl: float = 12 * 3600.0  # seconds a login lasts without activity
    secure_cookies: bool = False  # set behind HTTPS: cookies only over TLS
    agent_history_days: int = 30  # how far back an agent reads their own calls and those callers' customers
    healthz_token: str | None = None  # "Authorization: Bearer <token>" shows /healthz details without a login
    language: str = "ru"  # the pages' language when the browser asks for none the pages have (ru, en)
    # what a supervisor or an agent may choose as the reason of a pause (sent to Asterisk as PausedReason);
    # the words shown for them come from ivr/web/static/i18n/*.json (pause_reason.<reason>), else as written
    pause_reasons: tuple[str, ...] = ("break", "lunch", "after_call_work", "training", "meeting", "technical")


@dataclass(frozen=True)
class ReportSettings:
    """How the reports count (`queues.reports`)."""

    service_level_seconds: float = 20.0  # answered within this: in the service level
    short_abandon_seconds: float = 5.0  # hung up waiting sooner than this: not counted against it
    repeat_call_days: int = 3  # a call about the same intent within this: the first was not resolved
    nps_promoter: int = 9  # 9-10 promoters; 0..nps_detractor detractors
    nps_detractor: int = 6


@dataclass(frozen=True)
class PredictionSettings:
    """The learned prediction (`ivr model train`); without a model file the catalogue's rules rank."""

    model_file: Path = Path("var/intent-model.joblib")  # written by `ivr model train`
    enabled: bool = True  # rank with the model when its evaluation on held-out calls beat the rules


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    region: str = "RU"
    database_url: str = "sqlite+aiosqlite:///var/ivr.sqlite3"
    redis_url: str | None = None
    rules_file: Path = PROJECT_DIR / "config" / "routing.yaml"
    intents_file: Path = PROJECT_DIR / "config" / "intents.yaml"
    timezone: str = "Europe/Moscow"
    agi: AgiSettings = AgiSettings()
    ami: AmiSettings = AmiSettings()
    lookup: LookupSettings = LookupSettings()
    prompts: PromptSettings = PromptSettings()
    speech: SpeechSettings = SpeechSettings()
    web: WebSettings = WebSettings()
    reports: ReportSettings = ReportSettings()
    prediction: PredictionSettings = PredictionSettings()
    lines: tuple[Line, ...] = (Line(name="general"),)
    default_line: str = "general"
    call_context_ttl: float = 4 * 3600.0
    # Texts of the announcements routing rules name, per language; they are
    # synthesised.  A name not listed here is played as an Asterisk sound.
    announcements: dict[str, dict[str, str]] = field(default_factory=dict)

    def line_for(self, name_or_number: str | None) -> Line:
        """The line called by name (AGI argument) or dialled number; the default otherwise."""
        if name_or_number:
            digits = name_or_number.lstrip("+")
            for line in self.lines:
                if name_or_number == line.name or digits in (n.lstrip("+") for n in line.numbers):
                    return line
        for line in self.lines:
            if line.name == self.default_line:
                return line
        return self.lines[0]


_SECTIONS = {
    "agi": AgiSettings, "ami": AmiSettings, "lookup": LookupSettings, "prompts": PromptSettings,
    "speech": SpeechSettings, "web": WebSettings, "reports": ReportSettings, "prediction": PredictionSettings,
}
_PATHS = {"directory", "asterisk_directory", "dialog_file", "model_file"}
SELF_SERVICE_MODES = ("speech", "dtmf", "off")
SURVEY_MODES = ("csat", "nps", "both", "off")
_TOP_LEVEL = {
    "region", "database_url", "redis_url", "rules_file", "intents_file", "timezone",
    "lines", "default_line", "call_context_ttl", "announcements", *_SECTIONS,
}


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the file (or the shipped default, or nothing) and apply the environment."""
    environ = dict(os.environ if environ is None else environ)
    if path is None:
        path = environ.get("IVR_CONFIG") or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    config = Config()
    if path is not None:
        config = _from_file(Path(path))
    return _apply_environment(config, environ)


def _from_file(path: Path) -> Config:
    data = load_yaml(path)
    source = str(path)
    if data is None:
        data = LineDict()
    if not isinstance(data, dict):
        raise ConfigError(source, line_of(data), "the file must be a mapping of settings")
    base = path.parent
    _reject_unknown(data, _TOP_LEVEL, source, "setting")
    values: dict[str, Any] = {"source": source}
    for key, value in data.items():
        line = line_of(data, key)
        if key in _SECTIONS:
            values[key] = _section(_SECTIONS[key], value, source, line, base)
        elif key == "lines":
            values["lines"] = _lines(value, source, line)
        elif key in ("rules_file", "intents_file"):
            values[key] = _path(value, base, source, line, key)
        elif key == "announcements":
            values[key] = _announcements(value, source, line)
        elif key == "database_url":
            values[key] = resolve_database_url(_typed(Config, key, value, source, line), base)
        else:
            values[key] = _typed(Config, key, value, source, line)
    config = Config(**values)
    if not any(line.name == config.default_line for line in config.lines):
        raise ConfigError(source, line_of(data, "default_line"),
                          f"default_line {config.default_line!r} is not one of the lines")
    return config


def _reject_unknown(data: dict, known: set[str] | frozenset[str], source: str, what: str) -> None:
    reject_unknown_keys(data, sorted(known), source, what)


def _section(cls: type, value: Any, source: str, line: int | None, base: Path) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(source, line, f"expected a mapping of {cls.__name__} settings")
    known = {f.name for f in fields(cls)}
    _reject_unknown(value, known, source, "setting")
    kwargs = {}
    for key, item in value.items():
        item_line = line_of(value, key)
        if key in _PATHS and item is not None:
            kwargs[key] = _path(item, base, source, item_line, key)
        elif key == "models":
            kwargs[key] = {language: str(_path(path, base, source, line_of(item, language), f"models.{language}"))
                           for language, path in _typed(cls, key, item, source, item_line).items()}
        else:
            kwargs[key] = _typed(cls, key, item, source, item_line)
        if key.endswith("port") and not 0 <= kwargs[key] <= 65535:
            raise ConfigError(source, item_line, f"port must be 0..65535, got {kwargs[key]}")
        if key == "agent_history_days" and not 0 <= kwargs[key] <= 3650:
            raise ConfigError(source, item_line, f"agent_history_days must be 0..3650, got {kwargs[key]}")
        if key in ("max_megabytes", "max_age_days") and kwargs[key] < 1:
            raise ConfigError(source, item_line, f"{key} must be at least 1, got {kwargs[key]}")
        if key == "language" and kwargs[key] not in ("ru", "en"):
            raise ConfigError(source, item_line, f"language must be ru or en, got {kwargs[key]!r}")
        if key == "pause_reasons" and not (kwargs[key] and all(r.strip() and r.isprintable() and len(r) <= 80
                                                               for r in kwargs[key])):
            raise ConfigError(source, item_line, "pause_reasons: a list of words or short phrases, one at least")
    result = cls(**kwargs)
    if isinstance(result, ReportSettings):
        _check_reports(result, value, source, line)
    return result


def _check_reports(reports: ReportSettings, node: dict, source: str, line: int | None) -> None:
    """Figures that make a report: a service level and abandons in seconds, NPS bands within 0-10."""
    for key in ("service_level_seconds", "short_abandon_seconds", "repeat_call_days"):
        if getattr(reports, key) < 0:
            raise ConfigError(source, line_of(node, key) or line, f"{key} cannot be negative")
    if reports.service_level_seconds == 0:
        raise ConfigError(source, line_of(node, "service_level_seconds") or line,
                          "service_level_seconds must be more than 0")
    if not 0 <= reports.nps_detractor < reports.nps_promoter <= 10:
        raise ConfigError(source, line_of(node, "nps_detractor") or line_of(node, "nps_promoter") or line,
                          f"NPS bands: 0 <= nps_detractor < nps_promoter <= 10, got detractors up to "
                          f"{reports.nps_detractor} and promoters from {reports.nps_promoter}")


def _lines(value: Any, source: str, line: int | None) -> tuple[Line, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(source, line, "lines must be a non-empty list")
    known = {f.name for f in fields(Line)}
    result = []
    first_line: dict[str, int | None] = {}
    for item in value:
        item_line = line_of(item)
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(source, item_line or line, "each line needs at least a name")
        _reject_unknown(item, known, source, "line setting")
        for key in ("self_service", "survey"):
            if item.get(key) is False:  # `off` without quotes: YAML's false
                item[key] = "off"
        kwargs = {k: _typed(Line, k, v, source, line_of(item, k)) for k, v in item.items()}
        for key, modes in (("self_service", SELF_SERVICE_MODES), ("survey", SURVEY_MODES)):
            if key in kwargs and kwargs[key] not in modes:
                raise ConfigError(source, line_of(item, key),
                                  f"{key} must be one of {', '.join(modes)}, got {kwargs[key]!r}")
        for role in kwargs.get("roles", ()):
            if role not in ("private", "employee", "director"):
                raise ConfigError(source, line_of(item, "roles"), f"unknown role {role!r}")
        name = kwargs["name"]
        if name in first_line:
            raise ConfigError(source, line_of(item, "name"),
                              f"line {name!r} is defined twice (first at line {first_line[name]})")
        first_line[name] = line_of(item, "name")
        result.append(Line(**kwargs))
    return tuple(result)


def _announcements(value: Any, source: str, line: int | None) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict):
        raise ConfigError(source, line, "announcements must map names to texts per language")
    result = {}
    for name, texts in value.items():
        texts_ok = isinstance(texts, dict) and texts and all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in texts.items())
        if not texts_ok:
            raise ConfigError(source, line_of(value, name),
                              f"announcement {name!r}: expected texts per language, e.g. {{ru: ..., en: ...}}")
        result[str(name)] = dict(texts)
    return result


def _path(value: Any, base: Path, source: str, line: int | None, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, line, f"{key} must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


_NULLABLE = {"redis_url", "host", "secret", "asterisk_directory", "audiosocket_address", "healthz_token"}


def _typed(cls: type, key: str, value: Any, source: str, line: int | None) -> Any:
    """Check `value` against the type of the default of `cls.key`."""
    sample = getattr(cls(name="line") if cls is Line else cls(), key)
    if value is None:
        if key in _NULLABLE:
            return None
        raise ConfigError(source, line, f"{key} cannot be empty")
    if isinstance(sample, bool):
        ok = isinstance(value, bool)
    elif isinstance(sample, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(sample, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(sample, tuple):
        if isinstance(value, (str, int)):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, (str, int)) for v in value)
        value = tuple(str(v) for v in value) if ok else value
    elif isinstance(sample, dict):
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        value = dict(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(source, line, f"{key}: expected {type(sample).__name__}, got {value!r}")
    return value


def _apply_environment(config: Config, env: dict[str, str]) -> Config:
    agi, ami = config.agi, config.ami
    if "IVR_DATABASE_URL" in env:
        config = replace(config, database_url=env["IVR_DATABASE_URL"])
    if "IVR_REDIS_URL" in env:
        config = replace(config, redis_url=env["IVR_REDIS_URL"] or None)
    if "IVR_AGI_HOST" in env:
        agi = replace(agi, host=env["IVR_AGI_HOST"])
    if "IVR_AGI_PORT" in env:
        agi = replace(agi, port=_env_port(env, "IVR_AGI_PORT"))
    if "IVR_AGI_ALLOWED_HOSTS" in env:
        agi = replace(agi, allowed_hosts=_env_hosts(env["IVR_AGI_ALLOWED_HOSTS"]))
    if "IVR_AGI_WORKERS" in env:
        agi = replace(agi, workers=_env_int(env, "IVR_AGI_WORKERS"))
    if "IVR_AMI_HOST" in env:
        ami = replace(ami, host=env["IVR_AMI_HOST"] or None)
    if "IVR_AMI_PORT" in env:
        ami = replace(ami, port=_env_port(env, "IVR_AMI_PORT"))
    if "IVR_AMI_USERNAME" in env:
        ami = replace(ami, username=env["IVR_AMI_USERNAME"])
    if env.get("IVR_AMI_SECRET_FILE"):
        secret_path = Path(env["IVR_AMI_SECRET_FILE"])
        try:
            ami = replace(ami, secret=secret_path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(str(secret_path), None, f"cannot read the AMI secret: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(str(secret_path), None, "the AMI secret file is not UTF-8 text") from None
    elif "IVR_AMI_SECRET" in env:
        ami = replace(ami, secret=env["IVR_AMI_SECRET"])
    speech, web = config.speech, config.web
    if "IVR_SPEECH_MODELS" in env:
        speech = replace(speech, models=_env_models(env["IVR_SPEECH_MODELS"]))
    if "IVR_AUDIOSOCKET_HOST" in env:
        speech = replace(speech, audiosocket_host=env["IVR_AUDIOSOCKET_HOST"])
    if "IVR_AUDIOSOCKET_PORT" in env:
        speech = replace(speech, audiosocket_port=_env_port(env, "IVR_AUDIOSOCKET_PORT"))
    if "IVR_AUDIOSOCKET_ADDRESS" in env:
        speech = replace(speech, audiosocket_address=env["IVR_AUDIOSOCKET_ADDRESS"] or None)
    if "IVR_AUDIOSOCKET_ALLOWED_HOSTS" in env:
        speech = replace(speech, allowed_hosts=_env_hosts(env["IVR_AUDIOSOCKET_ALLOWED_HOSTS"]))
    if "IVR_WEB_HOST" in env:
        web = replace(web, host=env["IVR_WEB_HOST"])
    if "IVR_WEB_PORT" in env:
        web = replace(web, port=_env_port(env, "IVR_WEB_PORT"))
    if "IVR_HEALTHZ_TOKEN" in env:
        web = replace(web, healthz_token=env["IVR_HEALTHZ_TOKEN"] or None)
    config = replace(config, speech=speech, web=web)
    if env.get("IVR_SELF_SERVICE"):
        mode = env["IVR_SELF_SERVICE"]
        if mode not in SELF_SERVICE_MODES:
            raise ConfigError("environment", None,
                              f"IVR_SELF_SERVICE must be one of {', '.join(SELF_SERVICE_MODES)}, got {mode!r}")
        config = replace(config, lines=tuple(replace(line, self_service=mode) for line in config.lines))
    if env.get("IVR_PROMPTS_DIR"):
        config = replace(config, prompts=replace(config.prompts, directory=Path(env["IVR_PROMPTS_DIR"])))
    if env.get("IVR_MODEL_FILE"):
        config = replace(config, prediction=replace(config.prediction, model_file=Path(env["IVR_MODEL_FILE"])))
    return replace(config, agi=agi, ami=ami)


def _env_hosts(value: str) -> tuple[str, ...]:
    return tuple(host.strip() for host in value.split(",") if host.strip())


def _env_models(value: str) -> dict[str, str]:
    """``ru=/opt/vosk-ru,en=/opt/vosk-en`` -> {language: path}; empty: none."""
    models = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        language, sep, path = item.partition("=")
        if not sep or not language.strip() or not path.strip():
            raise ConfigError("environment", None,
                              f"IVR_SPEECH_MODELS: expected language=path[,language=path], got {item!r}")
        models[language.strip()] = path.strip()
    return models


def _env_int(env: dict[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError("environment", None, f"{name} must be a whole number, got {env[name]!r}") from None


def _env_port(env: dict[str, str], name: str) -> int:
    port = _env_int(env, name)
    if not 0 <= port <= 65535:
        raise ConfigError("environment", None, f"{name} must be a TCP port (0..65535), got {port}")
    return port


def resolve_database_url(url: str, base: Path | None = None) -> str:
    """Make a relative SQLite path absolute against `base` (default: cwd)."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = ((base or Path.cwd()) / url[len(prefix):]).resolve()
        return prefix + str(path)
    return url
