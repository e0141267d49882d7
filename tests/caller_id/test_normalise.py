import io
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caller_id.normalise import MaskingFilter, mask, mask_text, normalise

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+79161234567", "+79161234567"),
        ("89161234567", "+79161234567"),
        ("79161234567", "+79161234567"),
        ("9161234567", "+79161234567"),
        ("84951234567", "+74951234567"),
        ("0079161234567", "+79161234567"),
        ("81079161234567", "+79161234567"),
        ("810 44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44 20 7946 0958", "+442079460958"),
        ("447946095800", "+447946095800"),
        ("16502530000", "+16502530000"),
        ("8 916 123 45 67", "+79161234567"),
        ("8-916-123-45-67", "+79161234567"),
        ("8.916.123.45.67", "+79161234567"),
        ("+7 (916) 123-45-67", "+79161234567"),
        ("  +79161234567\r\n", "+79161234567"),
        ('"Ivan" <89161234567>', "+79161234567"),
        ('"Иван Петров" <+7 916 123-45-67>', "+79161234567"),
        ("<sip:+79161234567@192.0.2.10;user=phone>", "+79161234567"),
        ("tel:+7-916-123-45-67", "+79161234567"),
    ],
)
def test_caller_id_forms_become_e164(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None, "", "   ", "\t\n",
        "unknown", "anonymous", "Anonymous", "ANONYMOUS", "restricted", "withheld", "private",
        "sip:anonymous@anonymous.invalid",
        '"Anonymous" <anonymous>',
        "abc", "8916abc4567", "1-800-FLOWERS",
        "1" * 40, "+" + "7" * 20,
        "'; DROP TABLE customers;--",
        "89161234567'; DROP TABLE customers;--",
        "Иван Петров", "восемь девятьсот",
        "8916\x001234567", "\x1b[31m89161234567", "8916\u200b1234567",
        "٨٩١٦١٢٣٤٥٦٧",  # Arabic-Indic digits: not what a trunk sends
        "+", "++79161234567", "7+9161234567",
        "1001", "112", "12345",  # extensions and service numbers
        "+8 916 123 45 67",  # no country has code 8
        "+7916123",  # too short for Russia
        "x" * 10_000,
    ],
)
def test_no_usable_number_gives_none(raw):
    assert normalise(raw) is None


def test_national_number_is_read_in_the_given_region():
    assert normalise("020 7946 0958", region="GB") == "+442079460958"
    assert normalise("(650) 253-0000", region="us") == "+16502530000"


def test_unknown_region_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        normalise("89161234567", region="XX")


def test_non_string_caller_id_is_a_clear_error():
    with pytest.raises(TypeError, match="str or None"):
        normalise(89161234567)  # type: ignore[arg-type]


def test_possible_but_unassigned_number_is_kept():
    # Right length for Russia but in no range the numbering-plan data knows:
    # kept, so a caller on a newly opened range is still looked up.
    assert normalise("+71234567890") == "+71234567890"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_text_gives_none_or_e164(raw):
    result = normalise(raw)
    assert result is None or E164.match(result)


@settings(max_examples=400, deadline=None)
@given(st.from_regex(r"[+]?[0-9 ()\-.]{0,24}", fullmatch=True))
def test_any_digit_string_gives_none_or_e164(raw):
    result = normalise(raw)
    assert result is None or E164.match(result)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"9[0-9]{9}", fullmatch=True))
def test_russian_mobile_in_every_dialled_form_gives_one_number(national):
    forms = ["8" + national, "7" + national, "+7" + national, national, "810 7" + national, "007" + national]
    assert {normalise(form) for form in forms} == {"+7" + national}


@pytest.mark.parametrize(
    "number, masked",
    [
        ("+79161234567", "+*******4567"),
        ("+442079460958", "+********0958"),
        ("89161234567", "*******4567"),
        ("+7 916 123-45-67", "+*******4567"),
        ("1234567", "*****67"),
        ("1001", "****"),
        (None, "unknown"),
        ("", "unknown"),
        ("Иван Петров", "***"),
    ],
)
def test_mask_keeps_only_the_last_digits_of_numbers(number, masked):
    assert mask(number) == masked


def test_mask_text_masks_numbers_and_keeps_ids_addresses_and_dates():
    text = (
        "call 550e8400-e29b-41d4-a716-446655440000 uid 1700000000.123 from 192.168.1.10 "
        "on 2024-01-15: caller +7 (916) 123-45-67, callback 8.916.123.45.67, call a4d048cb4231899b0b79ad9e103c7c01"
    )
    assert mask_text(text) == (
        "call 550e8400-e29b-41d4-a716-446655440000 uid 1700000000.123 from 192.168.1.10 "
        "on 2024-01-15: caller +*******4567, callback *******4567, call a4d048cb4231899b0b79ad9e103c7c01"
    )


@pytest.mark.parametrize("text, masked", [
    ("PJSIP/1001-0000001a rang", "PJSIP/1001-0000001a rang"),  # a channel is an identifier
    ("agent PJSIP/1001-00000012", "agent PJSIP/1001-00000012"),
    ("PJSIP/79161234567-00000012", "PJSIP/*******4567-00000012"),  # a trunk channel named by the number
    ("Local/79161234567@from-internal-00000001;1", "Local/*******4567@from-internal-00000001;1"),
    ("token deadbeef12345678 kept", "token deadbeef12345678 kept"),  # digits inside a word
    ("number_79161234567", "number_*******4567"),
    ("тел.89161234567,", "тел.*******4567,"),
])
def test_mask_text_masks_numbers_never_identifiers(text, masked):
    assert mask_text(text) == masked


def test_masking_filter_masks_message_args_and_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.caller_id.masking")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.warning("caller %s dialled %s", "+79161234567", "8 (495) 123-45-67")
        logger.info("in text +442079460958 and as a number %d", 89161234567)
        try:
            raise RuntimeError("no customer for 89161234567")
        except RuntimeError:
            logger.exception("lookup failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    for digits in ("9161234567", "4951234567", "2079460958", "1234567"):
        assert digits not in output.replace("-", "").replace(" ", "")
    assert "caller +*******4567 dialled *******4567" in output
    assert "in text +********0958 and as a number *******4567" in output
    assert "RuntimeError: no customer for *******4567" in output


def test_masking_filter_keeps_records_with_broken_format_strings():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%d calls from %s", ("x",), None)
    assert MaskingFilter().filter(record) is True
    assert "%d calls" in record.getMessage()


def test_masking_filter_keeps_database_drivers_debug_records_out_at_any_level():
    """aiosqlite logs each statement with its parameters (names, tokens, hashes) at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    loggers = [logging.getLogger(name) for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine.Engine")]
    try:
        for logger in loggers:
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            logger.debug("executing %s", ("INSERT INTO users VALUES (?)", ("scrypt$16384$8$1$salt$hash",)))
            logger.info("[generated] %r", ("Иванов Иван",))
        logging.getLogger("aiosqlite").warning("database is locked")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
    assert stream.getvalue() == "database is locked\n"
