"""Logging in the way a browser does, for scripts, benchmarks and tests that talk to the web app."""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


async def log_in(session: Any, username: str, password: str) -> Any:
    """GET the form (its token and cookie), POST the credentials; the response (302 when it worked)."""
    async with session.get("/login") as form:
        page = await form.text()
    found = _TOKEN.search(page)
    if found is None:
        raise RuntimeError("the log-in page has no form token")
    async with session.post("/login", data={"username": username, "password": password,
                                            "login_token": found.group(1)}, allow_redirects=False) as response:
        await response.read()
        return response
