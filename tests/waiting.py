"""Bounded waiting for asyncio tests: the bounds only stop a broken test from hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
LIMIT = 10.0  # seconds; generous, never a performance claim


async def within(awaitable: Awaitable[T], limit: float = LIMIT) -> T:
    return await asyncio.wait_for(awaitable, limit)


async def eventually(condition: Callable[[], Any], limit: float = LIMIT) -> None:
    """Until `condition()` is true, polling every 5 ms."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)
