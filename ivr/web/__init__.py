"""The web application for agents and supervisors: see `ivr.web.app`."""

from ivr.web.app import build_app, start_web

__all__ = ["build_app", "start_web"]
