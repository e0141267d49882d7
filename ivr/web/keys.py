"""Typed keys of what the web app keeps on the application and on each request."""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web

SERVICES = web.AppKey("services", Any)  # ivr.services.Services
AGENT_SIDE = web.AppKey("agent_side", Any)  # ivr.callcenter.AgentSide
SESSIONS = web.AppKey("sessions", Any)  # ivr.web.auth.Sessions
SOCKETS = web.AppKey("sockets", weakref.WeakSet)  # open WebSockets, closed at shutdown
USER = web.RequestKey("user", Any)  # ivr.web.auth.CurrentUser or None
