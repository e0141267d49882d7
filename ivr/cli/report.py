"""`ivr report`: placeholder module, filled in by the report work."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Add this group's sub-parsers to the `ivr` parser's `sub`."""
