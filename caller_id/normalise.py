"""Caller-ID strings to E.164, and phone numbers kept out of the logs.

Asterisk hands the server whatever the trunk or the phone sent:
``+79161234567``, ``89161234567``, ``9161234567``, ``810 44 20 7946 0958``,
``"Ivan" <89161234567>``, ``sip:+7916...@pbx``, ``anonymous``, ``unknown``,
or junk.  `normalise` turns all of it into one E.164 string or None, and
never raises for a string.

Which numbers are accepted: among the readings of the digits (national in
the caller's region, after an ``00`` international prefix, or as an
international number sent without its ``+``) the first one that
`phonenumbers.is_valid_number` accepts wins.  When no reading is valid, the
first one that is merely possible (the right length for its country,
`ValidationResult.IS_POSSIBLE`) is still accepted.  Validity is the better
tie-breaker, but the library's numbering-plan data lags behind the ranges
operators open, and turning a real new-range caller into "unknown" loses
their CRM card, while an odd but well-formed number only costs a lookup
that finds nothing.  Numbers too short or too long for their country,
local-only numbers (no area code) and internal extensions give None.

`mask` and `MaskingFilter` keep full numbers out of log lines.
"""

from __future__ import annotations

import functools
import logging
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

__all__ = ["normalise", "mask", "mask_text", "MaskingFilter"]

_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

# Longer inputs are not caller IDs; refusing them early also bounds what
# the parse cache below keeps in memory.
_MAX_INPUT = 256
# "810" + 15 digits is the longest dialled form of an E.164 number.
_MAX_DIGITS = 18
# An international number sent without "+" has at least this many digits;
# shorter digit strings are local numbers or extensions.
_MIN_BARE_INTERNATIONAL = 11

_ANGLE = re.compile(r"<([^<>]*)>")
_URI_SCHEME = re.compile(r"^(?:sips?|tel):", re.IGNORECASE)
_SEPARATORS = re.compile(r"[ \t\u00a0\-.()/]+")
_DIALLED = re.compile(r"\+?[0-9]{1,%d}" % _MAX_DIGITS)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def normalise(raw: str | None, region: str = "RU") -> str | None:
    """The E.164 form of caller ID `raw`, or None when it names no number.

    `region` (ISO 3166 code, e.g. "RU") is where national numbers are
    dialled.  Raises ValueError for an unknown region and TypeError when
    `raw` is neither a str nor None; any string gives a result.
    """
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise TypeError(f"caller ID must be a str or None, not {type(raw).__name__}")
    region = region.upper()
    if region not in _REGIONS:
        raise ValueError(f"unknown phone region {region!r}; expected an ISO 3166 code such as 'RU'")
    if len(raw) > _MAX_INPUT:
        return None
    return _normalise(raw, region)


@functools.lru_cache(maxsize=16384)
def _normalise(raw: str, region: str) -> str | None:
    dialled = _dialled_part(raw)
    if dialled is None:
        return None
    best_possible = None
    for reading in _readings(dialled):
        try:
            parsed = phonenumbers.parse(reading, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return _e164(parsed)
        if best_possible is None and (
            phonenumbers.is_possible_number_with_reason(parsed) == ValidationResult.IS_POSSIBLE
        ):
            best_possible = parsed
    return None if best_possible is None else _e164(best_possible)


def _dialled_part(raw: str) -> str | None:
    """The ``+digits`` a caller-ID string carries, or None."""
    text = raw.strip()
    angle = _ANGLE.search(text)
    if angle is not None:  # "Name" <number> or <sip:number@host>
        text = angle.group(1).strip()
    text = _URI_SCHEME.sub("", text)
    text = re.split(r"[@;]", text, maxsplit=1)[0]
    text = _SEPARATORS.sub("", text)
    if _DIALLED.fullmatch(text) is None:
        return None
    return text


def _readings(dialled: str) -> list[str]:
    """How the dialled string may be read, most likely first."""
    if dialled.startswith("+"):
        return [dialled]
    readings = [dialled]  # national, or after the region's own international prefix
    if dialled.startswith("00"):
        readings.append("+" + dialled[2:])
    if len(dialled) >= _MIN_BARE_INTERNATIONAL:
        readings.append("+" + dialled)
    return readings


def _e164(parsed: phonenumbers.PhoneNumber) -> str | None:
    text = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    return text if _E164.fullmatch(text) else None


# --- keeping numbers out of the logs ------------------------------------------

def mask(number: str | None) -> str:
    """`number` fit for a log line: ``+79161234567`` -> ``+*******4567``.

    Ten digits or more keep the last four; six to nine keep the last two;
    shorter ones are all stars.  None or "" gives ``unknown``; anything that
    is not a number at all gives ``***``.
    """
    if not number:
        return "unknown"
    compact = _SEPARATORS.sub("", number.strip())
    if _DIALLED.fullmatch(compact) is None:
        return "***"
    plus = "+" if compact.startswith("+") else ""
    return plus + _mask_digits(compact.lstrip("+"))


def _mask_digits(digits: str) -> str:
    count = len(digits)
    if count >= 10:
        return "*" * (count - 4) + digits[-4:]
    if count >= 6:
        return "*" * (count - 2) + digits[-2:]
    return "*" * count


# Things that look like numbers but are kept as they are, tried first at each
# position so a phone-like run inside them is not matched: UUIDs (call ids, with
# or without dashes), IPv4 addresses, ISO dates and Asterisk channel unique ids
# (epoch.sequence).
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_KEEP = (
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    r"|\b[0-9a-fA-F]{32}\b"
    rf"|(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)"
    r"|(?<!\d)(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!-?\d)"
    r"|(?<![\d.])\d{10}\.\d{1,6}(?!\.?\d)"
)
# Six or more digits, optionally after "+", with up to two separators between, not part of a
# longer word: identifiers such as channel names (PJSIP/1001-0000001a) and hex ids stay whole.
_PHONE_LIKE = r"(?<![^\W_])\+?\d(?:[ \-.()]{0,2}\d){5,}(?![^\W_])"
# An Asterisk channel name: technology/resource-sequence (PJSIP/1001-0000001a, Local/x@ctx-00000001;1).
# The resource may hold a number and is masked; the sequence is an identifier and kept.
_CHANNEL = r"\b(?P<tech>[A-Za-z]+/)(?P<resource>[^\s,/]+?)(?P<sequence>-[0-9a-fA-F]{8}(?:;[12])?)(?![^\W_])"
_LOG_PATTERN = re.compile(f"(?P<keep>{_KEEP})|{_CHANNEL}|(?P<phone>{_PHONE_LIKE})")


def mask_text(text: str) -> str:
    """`text` with every phone-like run of six or more digits masked."""
    return _LOG_PATTERN.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    if match.group("tech") is not None:
        return match.group("tech") + mask_text(match.group("resource")) + match.group("sequence")
    phone = match.group("phone")
    if phone is None:
        return match.group(0)
    plus = "+" if phone.startswith("+") else ""
    return plus + _mask_digits(re.sub(r"\D", "", phone))


# Database drivers log, at DEBUG, every statement with its parameters and what it returned: names,
# notes, tokens, password hashes.  Below WARNING nothing of theirs reaches a log.
_RAW_DATA_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy.engine")


class MaskingFilter(logging.Filter):
    """Masks phone numbers in a record's message, arguments and traceback, and drops the database
    drivers' records below WARNING (statements with their parameters and rows), at any level.

    Install it on a handler (the server puts it on the root handler): the
    message is formatted with its arguments, masked, and stored back with no
    arguments left, so no formatter downstream can bring a number back.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and any(
                record.name == name or record.name.startswith(name + ".") for name in _RAW_DATA_LOGGERS):
            return False
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what can be shown
            message = f"{record.msg!s} {record.args!r}"
        record.msg = mask_text(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True
