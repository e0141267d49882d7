"""ivr.selfservice.script: the self-service dialog's script file (config/dialog.yaml).

The shipped file loads against the shipped intent catalogue and every step's
recognition grammar builds in every language; each mistake an administrator
can make in the file is a ConfigError naming the file and the line of the
mistake; `meanings()` says what each phrase means at a step.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from caller_id.catalogue import load_catalogue
from conffile import ConfigError
from ivr.selfservice.script import (NO, OPERATOR, PROMPTS, RATINGS, STEPS, YES, DialogScript, DialogSettings,
                               load_dialog_script)
from speech.asr import Grammar

PROJECT = Path(__file__).resolve().parents[3]
SHIPPED = PROJECT / "config" / "dialog.yaml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def intents() -> tuple[str, ...]:
    return tuple(load_catalogue(PROJECT / "config" / "intents.yaml").names)


@pytest.fixture(scope="module")
def script(intents) -> DialogScript:
    return load_dialog_script(SHIPPED, intents=intents)


def edited(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The shipped file with each `old` replaced (once) by `new`, written to tmp_path."""
    text = SHIPPED_TEXT
    for old, new in edits:
        assert text.count(old) >= 1, f"{old!r} is not in the shipped dialog file"
        text = text.replace(old, new, 1)
    path = tmp_path / "dialog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_with(path: Path, needle: str) -> int:
    """The number of the one line of `path` that contains `needle`."""
    found = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found}"
    return found[0]


def load_error(path: Path, intents: tuple[str, ...] | None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_dialog_script(path, intents=intents)
    error = caught.value
    assert error.source == str(path)
    return error


# -- the shipped file ------------------------------------------------------------------------


def test_the_shipped_file_loads_against_the_shipped_catalogue(script, intents) -> None:
    assert script.source == str(SHIPPED)
    assert script.languages == ("ru", "en")
    assert script.settings == DialogSettings(retries=1, no_input_timeout=4.0, max_seconds=240.0,
                                             offer_min_score=0.35, rating=True, examples=3,
                                             time_to_person=15.0, menu_size=3)
    assert isinstance(script.settings.max_seconds, float)  # 240 in the file, a float setting
    assert script.menu == ("card_ready", "documents_missing", "loan_payment", "deposit_question",
                           "transfer_problem")
    assert set(script.menu) <= set(intents)
    assert set(script.intent_phrases) <= set(intents)
    assert set(script.prompts) == set(PROMPTS)
    for name in PROMPTS:
        assert set(script.prompts[name]) == {"ru", "en"}, name
        assert all(text.strip() for text in script.prompts[name].values()), name
    assert set(script.words) == {YES, NO, OPERATOR}
    assert script.words[YES]["en"] == ("yes", "yeah", "correct", "right")  # quoted: not YAML booleans
    assert script.words[NO]["en"] == ("no", "nope", "something else")
    for language in ("ru", "en"):
        assert set(script.rating_words[language]) == set(RATINGS)
        assert all(script.rating_words[language][value] for value in RATINGS)
    assert script.rating_words["ru"][4] == ("четыре", "четвёрка")
    assert script.intent_phrases["mortgage_application"] == {"ru": ("ипотека",), "en": ("mortgage",)}


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_steps_grammar_builds_from_the_shipped_file(script, language: str) -> None:
    grammars = script.grammars(language)
    assert set(grammars) == set(STEPS) == {"confirm", "open_question", "rating", "nps"}
    for step, grammar in grammars.items():
        assert isinstance(grammar, Grammar)
        assert grammar.name == f"{step}/{language}"
        # The grammar listens for exactly the phrases the step gives a meaning to.
        assert set(grammar.phrases) == set(script.meanings(step, language))
    operator_words = set(script.words[OPERATOR][language])
    confirm = set(grammars["confirm"].phrases)
    assert set(script.words[YES][language]) | set(script.words[NO][language]) | operator_words == confirm
    open_question = set(grammars["open_question"].phrases)
    for intent, phrases in script.intent_phrases.items():
        assert set(phrases[language]) <= open_question, intent
    assert operator_words <= open_question
    assert not set(script.words[YES][language]) & open_question  # "yes" means nothing in the open question
    rating = set(grammars["rating"].phrases)
    assert {p for value in RATINGS for p in script.rating_words[language][value]} | operator_words == rating
    assert script.grammars(language) is grammars  # made once per language


def test_every_shipped_prompt_fills_with_the_documented_placeholders(script) -> None:
    values = dict(name="Пётр Сергеевич", intent="Карта", examples="a, b", menu="Карта: нажмите 1.",
                  title="Карта", digit=1, org="ООО Ромашка")
    for language in script.languages:
        for name in PROMPTS:
            text = script.text(name, language, **values)
            assert "{" not in text and "}" not in text, (name, language, text)
    assert script.text("greeting", "ru", name="Пётр Сергеевич") == "Здравствуйте, Пётр Сергеевич!"
    assert script.text("menu_item", "en", title="Loan payment", digit=3) == "Loan payment, 3,"


@pytest.mark.parametrize(("preferences", "expected"), [
    (("en", "ru"), "en"),
    ((None, "en"), "en"),
    (("de", "en"), "en"),
    (("de", None), "ru"),  # neither spoken: the file's first language
    ((), "ru"),
])
def test_language_for_takes_the_first_preference_the_script_speaks(script, preferences, expected) -> None:
    assert script.language_for(*preferences) == expected


# -- meanings -----------------------------------------------------------------------------


def test_meanings_of_the_shipped_words(script) -> None:
    confirm_ru = script.meanings("confirm", "ru")
    assert confirm_ru["да"] == YES and confirm_ru["конечно"] == YES
    assert confirm_ru["нет"] == NO and confirm_ru["оператор"] == OPERATOR
    assert script.meanings("confirm", "en")["something else"] == NO
    open_en = script.meanings("open_question", "en")
    assert open_en["is my card ready"] == "card_ready"
    assert open_en["money transfer"] == "transfer_problem"
    assert open_en["human"] == OPERATOR
    assert "yes" not in open_en and "one" not in open_en


@pytest.mark.parametrize("language", ["ru", "en"])
def test_rating_phrases_mean_the_digits_one_to_five(script, language: str) -> None:
    meanings = script.meanings("rating", language)
    for value in RATINGS:
        for phrase in script.rating_words[language][value]:
            assert meanings[phrase] == str(value), phrase
    assert set(meanings.values()) == {"1", "2", "3", "4", "5", OPERATOR}
    assert all(isinstance(meaning, str) for meaning in meanings.values())


def test_operator_phrases_win_a_clash_at_every_step(tmp_path, intents) -> None:
    # "agent" is also a no, "human" also names an intent and "person" also rates 1.
    path = edited(
        tmp_path,
        ('en: ["no", "nope", "something else"]', 'en: ["no", "nope", "agent"]'),
        ("en: [card, my card, is my card ready]", "en: [card, human]"),
        ("en: {1: [one],", "en: {1: [one, person],"),
    )
    script = load_dialog_script(path, intents=intents)
    assert script.meanings("confirm", "en")["agent"] == OPERATOR
    assert script.meanings("confirm", "en")["nope"] == NO
    assert script.meanings("open_question", "en")["human"] == OPERATOR
    assert script.meanings("open_question", "en")["card"] == "card_ready"
    assert script.meanings("rating", "en")["person"] == OPERATOR
    assert script.meanings("rating", "en")["one"] == "1"
    for language in ("ru", "en"):
        script.grammars(language)  # a clash still builds


def test_an_intent_without_phrases_in_a_language_is_not_heard_in_it(tmp_path, intents) -> None:
    path = edited(tmp_path, ("    ru: [ипотека]\n    en: [mortgage]", "    ru: [ипотека]"))
    script = load_dialog_script(path, intents=intents)
    assert script.meanings("open_question", "ru")["ипотека"] == "mortgage_application"
    assert "mortgage" not in script.meanings("open_question", "en")
    assert "mortgage_application" not in script.meanings("open_question", "en").values()


# -- broken files: the file and the line ------------------------------------------------------

# (edits, the text on the line the error must name, what the message must say)
BROKEN = {
    "unknown-section": (
        [("menu: [card_ready,", "menus: [card_ready,")], "menus:",
        "unknown section 'menus'; did you mean 'menu'?"),
    "unknown-section-at-the-end": (
        [("    en: [mortgage]", "    en: [mortgage]\nanswers:\n  card_ready: {ru: x}")], "answers:",
        "unknown section 'answers'"),
    "unknown-prompt-name": (
        [("  rating_keys:\n", "  rating_key:\n")], "rating_key:",
        "unknown prompt 'rating_key'; did you mean 'rating_keys'?"),
    "prompt-missing-a-language": (
        [('    en: "Thank you for calling. Goodbye."\n', "")], "  goodbye:",
        "prompt goodbye: no text for en"),
    "prompt-missing-both-languages": (
        [('  transfer:\n    ru: "Соединяю со специалистом."\n    en: "Connecting you to a specialist."\n',
          "  transfer: {}\n")], "  transfer: {}",
        "prompt transfer must be a non-empty mapping"),
    "prompt-text-empty": (
        [('    en: "Sorry, I did not catch that."', '    en: ""')], '    en: ""',
        "prompt not_understood (en) must be text"),
    "prompt-text-a-list": (
        [('    en: "Hello!"', "    en: [Hello]")], "    en: [Hello]",
        "prompt greeting_unknown (en) must be text"),
    "unclosed-brace": (
        [('en: "Is it about: {intent}?"', 'en: "Is it about: {intent?"')],
        "{intent?", "prompt offer (en)"),
    "single-closing-brace": (
        [('ru: "Здравствуйте, {name}!"', 'ru: "Здравствуйте, name}!"')], "Здравствуйте, name}!",
        "prompt greeting (ru): Single '}'"),
    "positional-placeholder": (
        [('en: "{title}, {digit},"', 'en: "{0}, {digit},"')], "{0}, {digit}",
        "prompt menu_item (en)"),
    "unquoted-yes-key": (
        [('  "yes":', "  yes:")], "  yes:",
        'write "yes" in quotes: YAML reads yes without them as true'),
    "unquoted-no-key": (
        [('  "no":', "  no:")], "  no:",
        'write "no" in quotes: YAML reads no without them as false'),
    "unquoted-yes-in-a-phrase-list": (
        [('en: ["yes", "yeah",', 'en: [yes, "yeah",')], '[yes, "yeah"',
        "(quote yes/no: YAML reads them as true/false)"),
    "rating-without-5": (
        [("en: {1: [one], 2: [two], 3: [three], 4: [four], 5: [five]}",
          "en: {1: [one], 2: [two], 3: [three], 4: [four]}")], "en: {1: [one]",
        "words rating (en) needs the keys 1 to 5"),
    "rating-with-6": (
        [("4: [четыре, четвёрка], 5: [пять, пятёрка]}", "4: [четыре, четвёрка], 5: [пять], 6: [шестёрка]}")],
        "6: [шестёрка]", "words rating (ru) needs the keys 1 to 5"),
    "rating-with-quoted-keys": (
        [("en: {1: [one], 2: [two], 3: [three], 4: [four], 5: [five]}",
          'en: {"1": [one], "2": [two], "3": [three], "4": [four], "5": [five]}')], 'en: {"1": [one]',
        "words rating (en) needs the keys 1 to 5"),
    "rating-not-a-mapping": (
        [("en: {1: [one], 2: [two], 3: [three], 4: [four], 5: [five]}", "en: [one, two, three, four, five]")],
        "en: [one, two, three, four, five]", "words rating (en) must be a non-empty mapping"),
    "rating-value-without-phrases": (
        [("en: {1: [one], 2: [two], 3: [three], 4: [four], 5: [five]}",
          "en: {1: [one], 2: [two], 3: [], 4: [four], 5: [five]}")], "3: [], 4: [four]",
        "words rating 3 (en) must be a non-empty list"),
    "survey-prompt-missing": (
        [('  survey_thanks:\n    ru: "Спасибо! До свидания."\n    en: "Thank you. Goodbye."\n', "")],
        "prompts:", "prompts: missing survey_thanks"),
    "survey-prompt-with-a-placeholder": (
        [('en: "Please rate this call from one to five."', 'en: "Please rate {agent} from one to five."')],
        "{agent}", "prompt survey_csat (en): unknown placeholder {agent}; this prompt takes no placeholders"),
    "nps-without-10": (
        [("8: [eight], 9: [nine], 10: [ten]}", "8: [eight], 9: [nine]}")], "en: {0: [zero]",
        "words nps (en) needs the keys 0 to 10"),
    "nps-missing": (
        [("  nps:\n", "  nps_words:\n")], "  nps_words:", "unknown word list 'nps_words'"),
    "words-missing-operator": (
        [("  operator:\n    ru: [оператор, специалист, человек, сотрудник]\n"
          "    en: [operator, agent, person, human]\n", "")], "words:",
        "words: missing 'operator'"),
    "words-unknown-meaning": (
        [('  "no":', '  "maybe":\n    ru: [может]\n    en: [maybe]\n  "no":')], '"maybe":',
        "unknown word list 'maybe'"),
    "empty-operator-phrases": (
        [("    en: [operator, agent, person, human]", "    en: []")], "    en: []",
        "words operator (en) must be a non-empty list"),
    "menu-unknown-intent": (
        [("menu: [card_ready, documents_missing,", "menu: [card_ready, documents_misisng,")], "menu:",
        "unknown intent 'documents_misisng'; did you mean 'documents_missing'?"),
    "menu-of-ten": (
        [("menu: [card_ready, documents_missing, loan_payment, deposit_question, transfer_problem]",
          "menu: [card_ready, documents_missing, loan_payment, deposit_question, transfer_problem,\n"
          "       card_pickup, card_blocked, card_reissue_delay, insurance_claim, mortgage_application]")],
        "menu:", "the menu has 10 intents; keys 1-9 hold at most 9"),
    "intent-phrase-language-not-spoken": (
        [("    en: [mortgage]", "    en: [mortgage]\n    de: [Hypothek]")], "de: [Hypothek]",
        "intent mortgage_application: language 'de' is not one of the dialog's languages (ru, en)"),
    "intent-phrase-named-twice": (
        [("    en: [mortgage]", "    en: [mortgage, Savings]")], "[mortgage, Savings]",
        "intent mortgage_application (en): the phrase 'Savings' already names deposit_question"),
    "intent-phrases-empty": (
        [("    ru: [ипотека]", "    ru: []")], "    ru: []",
        "intent mortgage_application (ru) must be a non-empty list"),
    "language-without-prompts": (
        [("languages: [ru, en]", "languages: [ru, en, de]")], "  greeting:",
        "prompt greeting: no text for de"),
    "negative-retries": (
        [("  retries: 1 ", "  retries: -1 ")], "retries:", "retries must be a number of at least 0, got -1"),
    "negative-examples": (
        [("  examples: 3 ", "  examples: -3 ")], "examples:", "examples must be a number of at least 0"),
    "negative-max-seconds": (
        [("  max_seconds: 240 ", "  max_seconds: -240 ")], "max_seconds:",
        "max_seconds must be a number of at least 0"),
    "retries-as-text": (
        [("  retries: 1 ", '  retries: "2" ')], "retries:", "retries must be a number of at least 0, got '2'"),
    "retries-not-whole": (
        [("  retries: 1 ", "  retries: 1.5 ")], "retries:", "retries must be a whole number, got 1.5"),
    "timeout-as-boolean": (
        [("  no_input_timeout: 4.0 ", "  no_input_timeout: true ")], "no_input_timeout:",
        "no_input_timeout must be a number of at least 0, got True"),
    "rating-setting-as-number": (
        [("  rating: true ", "  rating: 1 ")], "  rating: 1 ", "rating must be true or false, got 1"),
    "score-above-one": (
        [("  offer_min_score: 0.35", "  offer_min_score: 35")], "offer_min_score:",
        "offer_min_score is a score from 0 to 1"),
    "unknown-setting": (
        [("  retries: 1 ", "  retires: 1 ")], "retires:", "unknown setting 'retires'; did you mean 'retries'?"),
    "settings-not-a-mapping": (
        [(SHIPPED_TEXT[SHIPPED_TEXT.index("settings:\n"):SHIPPED_TEXT.index("# Intents offered by key")],
          "settings: fast\n")], "settings: fast",
        "settings must be a non-empty mapping"),
}


@pytest.mark.parametrize(("edits", "needle", "message"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_file_names_the_line_of_the_mistake(tmp_path, intents, edits, needle, message) -> None:
    path = edited(tmp_path, *edits)
    error = load_error(path, intents)
    assert message in error.message
    assert error.line == line_with(path, needle), str(error)
    assert str(error).startswith(f"{path}, line {error.line}: ")


def test_a_missing_section_is_named(tmp_path, intents) -> None:
    path = edited(tmp_path, ("languages: [ru, en]\n", ""))
    assert "the dialog file needs a 'languages' section" in load_error(path, intents).message


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path) -> None:
    path = tmp_path / "dialog.yaml"
    path.write_text("- greeting\n- goodbye\n", encoding="utf-8")
    assert "the dialog file must be a non-empty mapping" in load_error(path, None).message


def test_a_missing_prompt_is_named_at_the_prompts_section(tmp_path, intents) -> None:
    path = edited(tmp_path, ('  goodbye:\n    ru: "Спасибо за звонок! До свидания."\n'
                             '    en: "Thank you for calling. Goodbye."\n', ""))
    error = load_error(path, intents)
    assert "prompts: missing goodbye" in error.message
    assert error.line == line_with(path, "prompts:")


def test_a_menu_of_nine_fits_the_keys(tmp_path, intents) -> None:
    nine = ("card_ready", "documents_missing", "loan_payment", "deposit_question", "transfer_problem",
            "card_pickup", "card_blocked", "card_reissue_delay", "insurance_claim")
    path = edited(tmp_path, ("menu: [card_ready, documents_missing, loan_payment, deposit_question, "
                             "transfer_problem]", f"menu: [{', '.join(nine)}]"))
    assert load_dialog_script(path, intents=intents).menu == nine


def test_menu_intents_are_checked_only_against_a_catalogue(tmp_path, intents) -> None:
    path = edited(tmp_path, ("menu: [card_ready,", "menu: [no_such_intent,"))
    assert load_dialog_script(path).menu[0] == "no_such_intent"
    error = load_error(path, intents)
    assert "unknown intent 'no_such_intent'" in error.message


def test_settings_may_be_left_out(tmp_path, intents) -> None:
    text = SHIPPED_TEXT
    start, end = text.index("settings:\n"), text.index("# Intents offered by key")
    path = tmp_path / "dialog.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    assert load_dialog_script(path, intents=intents).settings == DialogSettings()


def test_a_setting_of_zero_retries_or_examples_is_allowed(tmp_path, intents) -> None:
    path = edited(tmp_path, ("  retries: 1 ", "  retries: 0 "), ("  examples: 3 ", "  examples: 0 "),
                  ("  offer_min_score: 0.35", "  offer_min_score: 0"))
    settings = load_dialog_script(path, intents=intents).settings
    assert (settings.retries, settings.examples, settings.offer_min_score) == (0, 0, 0.0)
    assert isinstance(settings.offer_min_score, float)


# -- mistakes the loader lets through (each of these fails today) -----------------------------


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('en: "Hello, {name}!"', 'en: "Hello, {nmae}!"', "{nmae}"),  # a typo'd placeholder
    ('en: "Thank you for calling. Goodbye."', 'en: "Goodbye, {name}."', "Goodbye, {name}"),  # not filled here
    ('en: "Hello, {name}!"', 'en: "Hello, {name.first}!"', "{name.first}"),  # attribute of a value
], ids=["misspelt", "not-filled-in-this-prompt", "attribute"])
def test_a_placeholder_the_dialog_does_not_fill_is_a_config_error(tmp_path, intents, old, new, needle) -> None:
    """BUG: only the brace syntax is checked, not the names.  `{nmae}` loads and the
    call that reaches the greeting dies in `script.text()` with KeyError (and
    `{name.first}` crashes the loader with AttributeError instead of a ConfigError).
    The header of dialog.yaml documents which placeholders exist."""
    path = edited(tmp_path, (old, new))
    error = load_error(path, intents)
    assert error.line == line_with(path, needle)


def test_rating_keys_half_quoted_are_a_config_error(tmp_path, intents) -> None:
    """BUG: `{1: [one], "2": [two], ...}` makes `sorted()` compare int with str and the
    loader dies with TypeError instead of naming the line."""
    path = edited(tmp_path, ("en: {1: [one], 2: [two]", 'en: {1: [one], "2": [two]'))
    error = load_error(path, intents)
    assert "needs the keys 1 to 5" in error.message
    assert error.line == line_with(path, 'en: {1: [one], "2"')


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("  no_input_timeout: 4.0 ", "  no_input_timeout: 0 ", "no_input_timeout:"),
    ("  max_seconds: 240 ", "  max_seconds: 0 ", "max_seconds:"),
    ("  time_to_person: 15 ", "  time_to_person: 0 ", "time_to_person:"),
    ("  menu_size: 3 ", "  menu_size: 4 ", "menu_size:"),
], ids=["no_input_timeout", "max_seconds", "time_to_person", "menu_size"])
def test_a_zero_timeout_names_its_own_line(tmp_path, intents, old, new, needle) -> None:
    """Minor: reported at the `settings:` line instead of the setting's own line
    (offer_min_score > 1 and every other setting mistake name the setting's line)."""
    path = edited(tmp_path, (old, new))
    error = load_error(path, intents)
    assert "must be positive" in error.message or "must be 1 to 3" in error.message
    assert error.line == line_with(path, needle)


def test_an_unknown_intent_under_intents_names_its_own_line(tmp_path, intents) -> None:
    """Minor: reported at the `intents:` section line, 25 lines above the misspelt name."""
    path = edited(tmp_path, ("  mortgage_application:", "  mortgage_aplication:"))
    error = load_error(path, intents)
    assert "unknown intent 'mortgage_aplication'; did you mean 'mortgage_application'?" in error.message
    assert error.line == line_with(path, "mortgage_aplication:")


def test_script_values_are_immutable_settings(script) -> None:
    with pytest.raises(Exception):
        script.settings.retries = 5  # type: ignore[misc]
    assert replace(script.settings, retries=3).retries == 3 and script.settings.retries == 1


def test_the_role_question_reads_each_role_with_its_key_in_the_callers_language(script) -> None:
    from caller_id.profile import Organisation, Role

    firm = Organisation(id="o1", name="ООО Ромашка", segment="sme", is_vip=False, manager=None)
    roles = (Role(kind="private", customer_id="c1"), Role(kind="director", customer_id="c1", organisation=firm))
    assert script.role_question(roles, "ru") == ("Здравствуйте! Как частное лицо — 1, "
                                                 "как руководитель компании ООО Ромашка — 2.")
    assert script.role_question(roles, "en") == "Hello! As a private client, 1, as the director of ООО Ромашка, 2."
    assert script.role_question(roles, "de") == script.role_question(roles, "ru")  # the script's first language
