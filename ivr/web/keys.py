"""Typed keys of what the web app keeps on the application and on each request."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.services import AgentSide, Services

SERVICES = web.AppKey("services", Services)
AGENT_SIDE = web.AppKey("agent_side", AgentSide)
SESSIONS = web.AppKey("sessions", Any)  # ivr.web.auth.Sessions
SOCKETS = web.AppKey("sockets", Any)  # ivr.web.live.LiveSockets: open WebSockets by session
USER = web.RequestKey("user", Any)  # ivr.web.auth.CurrentUser or None
