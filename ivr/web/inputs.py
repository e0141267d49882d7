"""What clients may send the web app, and the one way it is checked.

Every handler reads its input through `json_body`, `form_body` or `params`,
each with a msgspec Struct that says what is allowed: types taken strictly
("5" is not a whole number, true is not one either, 1.9 is not, a number too
large for its range is out of range), lengths, ranges, and no control
characters in text.  An unknown field, a body that is not UTF-8, JSON of the
wrong shape, a body larger than `MAX_BODY` (also when Content-Length says so
before anything was sent) or of another media type is refused with a 400,
413 or 415 naming what is wrong; nothing reaches the database or Asterisk.
Under /api/ the answer is ``{"error": "..."}``; elsewhere, plain text.

A client that goes away in the middle of its body gets nothing (there is no
one to answer) and leaves only a DEBUG line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from msgspec import Meta

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded",)
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")  # session, CSRF and form tokens (secrets.token_urlsafe)


def matching(regex: str, max_length: int, min_length: int = 1) -> Any:
    """A string type: the whole of it matches `regex` (``$`` alone would let a final line feed through)."""
    return Annotated[str, Meta(min_length=min_length, max_length=max_length, pattern=f"^(?:{regex})$(?!\\n)")]


def text(max_length: int, *, multiline: bool = False, min_length: int = 1) -> Any:
    """Text without control characters (line feeds and tabs only when `multiline`); not only blanks unless
    it may be empty."""
    allowed = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]" if multiline else r"[^\x00-\x1f\x7f]"
    regex = f"{allowed}*[^\\s\\x00-\\x1f\\x7f]{allowed}*" if min_length else f"{allowed}*"
    return matching(regex, max_length, min_length)


Line = text(200)  # one line: a name, a reason, what goes into an AMI header
Note = text(2000, multiline=True)
Code = matching(r"[a-z][a-z0-9_]*", 64)
Id = Annotated[int, Meta(ge=1, le=2**31 - 1)]
CallId = matching(r"[A-Za-z0-9._:-]+", 64)
Interface = matching(r"[A-Za-z][A-Za-z0-9_-]*/[^\s\x00-\x1f\x7f]+", 80, 3)  # PJSIP/1001, Local/1001@agents
QueueName = matching(r"[A-Za-z0-9_.-]+", 80)
Penalty = Annotated[int, Meta(ge=0, le=1000)]

S = TypeVar("S", bound=msgspec.Struct)


class Input(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every input schema: a field it does not name is an error."""


class Nothing(Input):
    """No parameters."""


def refusal(request: web.Request, status: int, message: str, **headers: str) -> web.HTTPException:
    """The error answer with `status`: JSON under /api/, plain text elsewhere."""
    kinds = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
             409: web.HTTPConflict, 415: web.HTTPUnsupportedMediaType, 429: web.HTTPTooManyRequests,
             502: web.HTTPBadGateway, 503: web.HTTPServiceUnavailable}
    if request.path.startswith("/api/"):
        kwargs: dict[str, Any] = {"text": json.dumps({"error": message}, ensure_ascii=False),
                                  "content_type": "application/json"}
    else:
        kwargs = {"text": message, "content_type": "text/plain"}
    if status == 413:
        return web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length or MAX_BODY + 1,
                                             headers=headers or None, **kwargs)
    return kinds[status](headers=headers or None, **kwargs)


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""


def too_large(request: web.Request) -> bool:
    return request.content_length is not None and request.content_length > MAX_BODY


async def _read(request: web.Request, media_types: tuple[str, ...]) -> bytes:
    if request.content_type not in media_types:
        raise refusal(request, 415, f"send {' or '.join(media_types)}")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise refusal(request, 415, "send UTF-8 (charset=utf-8)")
    if too_large(request):
        raise refusal(request, 413, f"the body may have at most {MAX_BODY} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise refusal(request, 413, f"the body may have at most {MAX_BODY} bytes") from None
    except (ConnectionError, asyncio.IncompleteReadError, HttpProcessingError) as exc:
        log.debug("%s %s: the client left in the middle of its body (%s)", request.method, request.path,
                  type(exc).__name__)
        raise ClientGone() from None


def _check(request: web.Request, schema: type[S], data: Any, *, strict: bool) -> S:
    try:
        return msgspec.convert(data, schema, strict=strict)
    except msgspec.ValidationError as exc:
        raise refusal(request, 400, _readable(exc)) from None


def _readable(exc: msgspec.ValidationError) -> str:
    """msgspec's message with the field first: ``penalty: Expected `int`, got `str```."""
    message = re.sub(r"Expected `str` matching regex '.*'", "Expected text of another form (no control characters, "
                     "not blank; see /api/v1/openapi.json)", str(exc), flags=re.DOTALL)
    found = re.fullmatch(r"(.*) - at `\$\.([\w.\[\]]+)`", message, re.DOTALL)
    if found is None:
        return message
    return f"{found.group(2)}: {found.group(1)}"


async def json_body(request: web.Request, schema: type[S]) -> S:
    """The JSON object of the request body as `schema`."""
    raw = await _read(request, JSON_TYPES)
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        raise refusal(request, 400, _readable(exc)) from None
    except msgspec.DecodeError as exc:
        raise refusal(request, 400, f"the body is not valid JSON: {exc}") from None


async def form_fields(request: web.Request) -> dict[str, str]:
    """The fields of a URL-encoded form, each once; 400 for anything that is not such a form in UTF-8."""
    raw = await _read(request, FORM_TYPES)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw.strip()),
                          errors="strict", max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise refusal(request, 400, "the form is not URL-encoded UTF-8") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise refusal(request, 400, f"{name}: given more than once")
        fields[name] = value
    return fields


async def form_body(request: web.Request, schema: type[S]) -> S:
    """A URL-encoded form as `schema` (its fields are text)."""
    return _check(request, schema, await form_fields(request), strict=True)


def params(request: web.Request, schema: type[S]) -> S:
    """The path and query parameters as `schema`; query text is read as numbers or booleans where the
    schema says so ("true"/"false")."""
    data: dict[str, str] = {}
    for name, value in request.query.items():
        if name in data:
            raise refusal(request, 400, f"{name}: given more than once")
        data[name] = value
    for name, value in request.match_info.items():
        if name in data:
            raise refusal(request, 400, f"{name}: is part of the path")
        data[name] = value
    return _check(request, schema, data, strict=False)


def is_token(value: Any) -> bool:
    """A token this app made (session, CSRF, log-in form) has this shape; anything else is no token."""
    return isinstance(value, str) and TOKEN_PATTERN.fullmatch(value) is not None
