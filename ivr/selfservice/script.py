"""The self-service dialog's script: prompts, the words of each step, the key menu.

The post-call survey (`ivr.call.survey`) speaks from the same file: its
``survey_*`` prompts, the ``rating`` words (1-5) for its CSAT question and
the ``nps`` words (0-10) for its NPS question.

Loaded from ``config/dialog.yaml`` (see the comments there).  Every mistake
- an unknown key, a missing language, an empty phrase list, a menu intent
the catalogue does not have - is a `ConfigError` naming the file and line.
`DialogScript.grammars(language)` gives the recognition grammar of each
step; `speech.asr.check_grammar` proves them against a model when the model
loads, so a word the model does not know is reported before any call.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from caller_id.profile import ROLE_KINDS, Role
from conffile import ConfigError, did_you_mean, line_of, load_yaml, reject_unknown_keys

YES, NO, OPERATOR = "yes", "no", "operator"
# The post-call survey (ivr.call.survey): the intro before the first question, each question and its
# keys, the thanks that closes it.
SURVEY_PROMPTS = ("survey_intro", "survey_csat", "survey_csat_keys", "survey_nps", "survey_nps_keys", "survey_thanks")
PROMPTS = (
    "greeting", "greeting_unknown", "offer", "offer_keys", "helped", "helped_keys",
    "open_question", "open_question_keys", "menu_item", "not_understood", "transfer",
    "rating", "rating_keys", "goodbye",
    "role_intro", *(f"role_{kind}" for kind in ROLE_KINDS),  # the role question: one choice per role kind
    *SURVEY_PROMPTS,
)
RATINGS = (1, 2, 3, 4, 5)
NPS_SCORES = tuple(range(11))  # 0-10
# The placeholders the dialog fills in each prompt (ivr.selfservice.dialog); any other is a mistake in the file.
PLACEHOLDERS = {"greeting": ("name",), "offer": ("intent",), "open_question": ("examples",),
                "open_question_keys": ("menu",), "menu_item": ("title", "digit"),
                **{f"role_{kind}": ("digit", "org") for kind in ROLE_KINDS}}
# Steps and what their grammar holds besides the operator phrases.
STEPS = {"confirm": (YES, NO), "open_question": ("intents",), "rating": ("rating",), "nps": ("nps",)}


@dataclass(frozen=True)
class DialogSettings:
    retries: int = 1
    no_input_timeout: float = 4.0
    max_seconds: float = 240.0
    offer_min_score: float = 0.35
    rating: bool = True
    examples: int = 3
    time_to_person: float = 15.0  # a caller who answers nothing is queued this long after the AGI start
    menu_size: int = 3  # reasons offered by key in the open question (the likeliest first)


@dataclass(frozen=True)
class DialogScript:
    source: str
    languages: tuple[str, ...]
    settings: DialogSettings
    menu: tuple[str, ...]
    prompts: Mapping[str, Mapping[str, str]]  # prompt -> language -> text
    words: Mapping[str, Mapping[str, tuple[str, ...]]]  # yes/no/operator -> language -> phrases
    rating_words: Mapping[str, Mapping[int, tuple[str, ...]]]  # language -> rating -> phrases
    intent_phrases: Mapping[str, Mapping[str, tuple[str, ...]]]  # intent -> language -> phrases
    lines: Mapping[str, int | None] = field(default_factory=dict)  # "settings.x" / "prompts.x" -> line in source
    nps_words: Mapping[str, Mapping[int, tuple[str, ...]]] = field(default_factory=dict)  # language -> 0-10 -> phrases
    _grammars: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def language_for(self, *preferences: str | None) -> str:
        for language in preferences:
            if language in self.languages:
                return language
        return self.languages[0]

    def text(self, prompt: str, language: str, **values: Any) -> str:
        return self.prompts[prompt][language].format(**values)

    def role_question(self, roles: Iterable[Role], language: str) -> str:
        """"Hello! As a private client, 1, for Romashka LLC, 2.": the number's roles by key, from 1."""
        language = self.language_for(language)
        choices = " ".join(self.text(f"role_{role.kind}", language, digit=digit,
                                     org=role.organisation.name if role.organisation else "")
                           for digit, role in enumerate(roles, start=1))
        choices = choices[:1].upper() + choices[1:]
        return f"{self.text('role_intro', language)} {choices.rstrip(',')}."

    def survey_question(self, question: str, language: str, *, first: bool = False,
                        again: bool = False) -> tuple[str, str]:
        """The survey's `question` ("csat" or "nps") as spoken and its key instructions: the intro
        before the first question, "sorry, I did not catch that" before a repeat."""
        text = self.text(f"survey_{question}", language)
        if again:
            text = f"{self.text('not_understood', language)} {text}"
        elif first:
            text = f"{self.text('survey_intro', language)} {text}"
        return text, self.text(f"survey_{question}_keys", language)

    def meanings(self, step: str, language: str) -> dict[str, str]:
        """Phrase -> what it means at `step` ("yes", "no", "operator", an intent, "1".."5", "0".."10")."""
        found: dict[str, str] = {}
        for part in STEPS[step]:
            if part == "intents":
                for intent, phrases in self.intent_phrases.items():
                    found.update((p, intent) for p in phrases.get(language, ()))
            elif part in ("rating", "nps"):
                scores = self.rating_words if part == "rating" else self.nps_words
                for value, phrases in scores.get(language, {}).items():
                    found.update((p, str(value)) for p in phrases)
            else:
                found.update((p, part) for p in self.words[part][language])
        found.update((p, OPERATOR) for p in self.words[OPERATOR][language])  # operator wins a clash
        return found

    def grammars(self, language: str) -> dict[str, Any]:
        """Step -> `speech.asr.Grammar` for `language` (made once)."""
        from speech.asr import Grammar

        made = self._grammars.get(language)
        if made is None:
            made = {step: Grammar(self.meanings(step, language), name=f"{step}/{language}") for step in STEPS}
            self._grammars[language] = made
        return made


def load_dialog_script(path: str | Path, *, intents: tuple[str, ...] | None = None) -> DialogScript:
    """Read the dialog file; `intents` (the catalogue's names) are checked when given."""
    data = load_yaml(path)
    return _Reader(str(path), intents).script(data)


class _Reader:
    def __init__(self, source: str, intents: tuple[str, ...] | None):
        self.source = source
        self.intents = intents
        self.languages: tuple[str, ...] = ()

    def fail(self, line: int | None, message: str) -> ConfigError:
        return ConfigError(self.source, line, message)

    def mapping(self, node: Any, line: int | None, what: str) -> dict:
        if not isinstance(node, dict) or not node:
            raise self.fail(line_of(node) or line, f"{what} must be a non-empty mapping")
        return node

    def script(self, data: Any) -> DialogScript:
        top = self.mapping(data, None, "the dialog file")
        known = ("languages", "settings", "menu", "prompts", "words", "intents")
        reject_unknown_keys(top, known, self.source, "section")
        for key in ("languages", "prompts", "words"):
            if key not in top:
                raise self.fail(None, f"the dialog file needs a {key!r} section")
        self.languages = self.phrases(top["languages"], line_of(top, "languages"), "languages")
        settings = self.settings(top.get("settings"), line_of(top, "settings"))
        settings_node = top.get("settings") if isinstance(top.get("settings"), dict) else {}
        lines = {"settings": line_of(top, "settings"),
                 **{f"settings.{key}": line_of(settings_node, key) for key in settings_node},
                 **{f"prompts.{name}": line_of(top["prompts"], name) for name in PROMPTS}}
        return DialogScript(
            source=self.source,
            languages=self.languages,
            settings=settings,
            menu=self.menu(top.get("menu", ()), line_of(top, "menu")),
            prompts=self.prompts(top["prompts"], line_of(top, "prompts")),
            words=self.words(top["words"], line_of(top, "words")),
            rating_words=self.rating_words(top["words"]),
            intent_phrases=self.intent_phrases(top.get("intents") or {}, line_of(top, "intents")),
            lines=lines,
            nps_words=self.score_words(top["words"], "nps", NPS_SCORES),
        )

    def settings(self, node: Any, line: int | None) -> DialogSettings:
        if node is None:
            return DialogSettings()
        node = self.mapping(node, line, "settings")
        defaults = DialogSettings()
        reject_unknown_keys(node, tuple(vars(defaults)), self.source, "setting")
        values = {}
        for key, value in node.items():
            sample = getattr(defaults, key)
            at = line_of(node, key)
            if isinstance(sample, bool):
                if not isinstance(value, bool):
                    raise self.fail(at, f"{key} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise self.fail(at, f"{key} must be a number of at least 0, got {value!r}")
            elif isinstance(sample, int) and not isinstance(value, int):
                raise self.fail(at, f"{key} must be a whole number, got {value!r}")
            values[key] = type(sample)(value)
        settings = DialogSettings(**values)
        for key in ("no_input_timeout", "max_seconds", "time_to_person"):
            if getattr(settings, key) <= 0:
                raise self.fail(line_of(node, key), f"{key} must be positive")
        if not 1 <= settings.menu_size <= 3:
            raise self.fail(line_of(node, "menu_size"),
                            "menu_size must be 1 to 3: a caller keeps no more reasons in mind than that")
        if settings.offer_min_score > 1:
            raise self.fail(line_of(node, "offer_min_score"), "offer_min_score is a score from 0 to 1")
        return settings

    def phrases(self, node: Any, line: int | None, what: str) -> tuple[str, ...]:
        if isinstance(node, str):
            node = [node]
        if not isinstance(node, list) or not node:
            raise self.fail(line_of(node) or line, f"{what} must be a non-empty list")
        result = []
        for item in node:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
                raise self.fail(line_of(node) or line, f"{what}: {item!r} is not a word or phrase"
                                + (" (quote yes/no: YAML reads them as true/false)" if isinstance(item, bool) else ""))
            result.append(" ".join(str(item).split()))
        return tuple(result)

    def per_language(self, node: Any, line: int | None, what: str) -> dict:
        node = self.mapping(node, line, what)
        missing = [language for language in self.languages if language not in node]
        if missing:
            raise self.fail(line or line_of(node), f"{what}: no text for {', '.join(missing)}")
        return node

    def menu(self, node: Any, line: int | None) -> tuple[str, ...]:
        if not node:
            return ()
        menu = self.phrases(node, line, "menu")
        if len(menu) > 9:
            raise self.fail(line, f"the menu has {len(menu)} intents; keys 1-9 hold at most 9")
        self.check_intents(menu, line)
        return menu

    def check_intents(self, names: tuple[str, ...] | list[str], line: int | None, node: Any = None) -> None:
        """Every name is a catalogue intent; a wrong one is reported at its own key of `node` when given."""
        if self.intents is None:
            return
        for name in names:
            if name not in self.intents:
                raise self.fail(line_of(node, name) if node is not None else line,
                                f"unknown intent {name!r}{did_you_mean(name, self.intents)}")

    def prompts(self, node: Any, line: int | None) -> dict[str, dict[str, str]]:
        node = self.mapping(node, line, "prompts")
        reject_unknown_keys(node, PROMPTS, self.source, "prompt")
        missing = [name for name in PROMPTS if name not in node]
        if missing:
            raise self.fail(line, f"prompts: missing {', '.join(missing)}")
        result = {}
        for name, texts in node.items():
            texts = self.per_language(texts, line_of(node, name), f"prompt {name}")
            for language, text in texts.items():
                if not isinstance(text, str) or not text.strip():
                    raise self.fail(line_of(texts, language), f"prompt {name} ({language}) must be text")
                self.check_placeholders(name, language, text, line_of(texts, language))
            result[name] = {language: str(texts[language]) for language in self.languages}
        return result

    def check_placeholders(self, name: str, language: str, text: str, line: int | None) -> None:
        allowed = PLACEHOLDERS.get(name, ())
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
        except ValueError as exc:
            raise self.fail(line, f"prompt {name} ({language}): {exc}; write {{{{ and }}}} for a brace") from None
        for placeholder in fields:
            if placeholder not in allowed:
                fills = ", ".join("{" + a + "}" for a in allowed) or "no placeholders"
                raise self.fail(line, f"prompt {name} ({language}): unknown placeholder {{{placeholder}}}; "
                                f"this prompt takes {fills}")

    def words(self, node: Any, line: int | None) -> dict[str, dict[str, tuple[str, ...]]]:
        node = self.mapping(node, line, "words")
        for key in node:
            if isinstance(key, bool):
                raise self.fail(line_of(node, key), f'write "{YES if key else NO}" in quotes: '
                                f"YAML reads {YES if key else NO} without them as {str(key).lower()}")
        reject_unknown_keys(node, (YES, NO, OPERATOR, "rating", "nps"), self.source, "word list")
        result = {}
        for meaning in (YES, NO, OPERATOR, "rating", "nps"):
            if meaning not in node:
                raise self.fail(line, f"words: missing {meaning!r}")
            texts = self.per_language(node[meaning], line_of(node, meaning), f"words {meaning}")
            if meaning not in ("rating", "nps"):
                result[meaning] = {language: self.phrases(texts[language], line_of(texts, language),
                                                          f"words {meaning} ({language})")
                                   for language in self.languages}
        return result

    def rating_words(self, node: dict) -> dict[str, dict[int, tuple[str, ...]]]:
        return self.score_words(node, "rating", RATINGS)

    def score_words(self, node: dict, name: str, scores: tuple[int, ...]) -> dict[str, dict[int, tuple[str, ...]]]:
        """The words of each score (`rating`: 1-5, `nps`: 0-10), per language; every score needs words."""
        texts = node[name]
        result = {}
        for language in self.languages:
            values = self.mapping(texts[language], line_of(texts, language), f"words {name} ({language})")
            if set(values) != set(scores) or any(isinstance(key, bool) for key in values):
                raise self.fail(line_of(texts, language),
                                f"words {name} ({language}) needs the keys {scores[0]} to {scores[-1]}")
            result[language] = {value: self.phrases(values[value], line_of(values, value),
                                                    f"words {name} {value} ({language})")
                                for value in scores}
        return result

    def intent_phrases(self, node: Any, line: int | None) -> dict[str, dict[str, tuple[str, ...]]]:
        if not node:
            return {}
        node = self.mapping(node, line, "intents")
        self.check_intents(list(node), line, node)
        result: dict[str, dict[str, tuple[str, ...]]] = {}
        seen: dict[tuple[str, str], str] = {}
        for intent, texts in node.items():
            texts = self.mapping(texts, line_of(node, intent), f"intent {intent}")
            unknown = [language for language in texts if language not in self.languages]
            if unknown:
                raise self.fail(line_of(texts, unknown[0]), f"intent {intent}: language {unknown[0]!r} "
                                f"is not one of the dialog's languages ({', '.join(self.languages)})")
            result[str(intent)] = {language: self.phrases(phrases, line_of(texts, language),
                                                          f"intent {intent} ({language})")
                                   for language, phrases in texts.items()}
            for language, phrases in result[str(intent)].items():
                for phrase in phrases:
                    other = seen.setdefault((language, phrase.lower()), str(intent))
                    if other != intent:
                        raise self.fail(line_of(texts, language), f"intent {intent} ({language}): the phrase "
                                        f"{phrase!r} already names {other}; the caller would get either")
        return result
