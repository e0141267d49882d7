"""The pages' languages: the words live in ``static/i18n/<language>.json``, not in code.

Each catalogue maps a key (``state.in_call``, ``wallboard.calls_now``) to the
text of one language, with ``{name}`` placeholders.  The server fills the
page shells with it (`translate`); the pages' scripts load the same file
from ``/static/i18n/<language>.json`` and use it for everything they draw.

Which language a page is in (`choose`): the one the user picked in the page
header (the `COOKIE`, kept a year), else the first of the browser's
``Accept-Language`` that there is a catalogue for, else ``web.language``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

CATALOGUES = Path(__file__).resolve().parent / "static" / "i18n"
COOKIE = "ivr_lang"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def _load() -> dict[str, dict[str, str]]:
    found = {}
    for path in sorted(CATALOGUES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f"{path}: expected an object of key to text")
        found[path.stem] = data
    return found


CATALOGUE = _load()
LANGUAGES = tuple(sorted(CATALOGUE))


def translate(language: str, key: str, **values: Any) -> str:
    """The text of `key` in `language` with its placeholders filled (the key itself when missing)."""
    text = CATALOGUE.get(language, {}).get(key)
    if text is None:
        return key
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


def from_header(value: str | None) -> list[str]:
    """The primary languages of an ``Accept-Language`` header, most wanted first (q=0 left out)."""
    ranked = []
    for index, part in enumerate((value or "").split(",")[:20]):
        found = _RANGE.match(part)
        if found is None:
            continue
        try:
            weight = float(found.group(2)) if found.group(2) is not None else 1.0
        except ValueError:
            continue
        if weight > 0:
            ranked.append((-weight, index, found.group(1).lower()))
    return [language for _, _, language in sorted(ranked)]


def choose(request: web.Request, default: str) -> str:
    """The language of the page this request asks for (see the module doc)."""
    picked = request.cookies.get(COOKIE)
    if picked in CATALOGUE:
        return picked
    for language in from_header(request.headers.get("Accept-Language")):
        if language in CATALOGUE:
            return language
    return default if default in CATALOGUE else LANGUAGES[0]
