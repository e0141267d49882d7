"""The TCP listener the FastAGI and AudioSocket servers share, and its allowed-host rule."""

from __future__ import annotations

import abc
import asyncio
import ipaddress
from collections.abc import Iterable
from typing import Any


def parse_allowed(hosts: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``)."""
    return [ipaddress.ip_network(h, strict=False) for h in hosts]


def host_is_allowed(host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Is the peer address `host` in one of `networks` (IPv4-mapped IPv6 counts as IPv4)?"""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class TcpListener(abc.ABC):
    """What the FastAGI and AudioSocket listeners share: an address, the
    allowed Asterisk hosts, and starting an asyncio server with a protocol."""

    host: str
    port: int
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    reuse_port: bool
    _server: asyncio.base_events.Server | None

    @abc.abstractmethod
    def protocol(self) -> asyncio.Protocol:
        """A new protocol object for one accepted connection."""

    def is_allowed(self, host: str) -> bool:
        return host_is_allowed(host, self.allowed)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol, self.host, self.port,
            reuse_address=True, reuse_port=self.reuse_port or None, backlog=1024,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _stop_accepting(self, tasks: set[asyncio.Task[Any]], grace: float) -> None:
        """Stop accepting, let `tasks` finish for `grace` seconds, then cancel the rest."""
        if self._server is not None:
            self._server.close()
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
