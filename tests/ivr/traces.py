"""The recorded Asterisk 23 FastAGI sessions in ``tests/data/asterisk-traces/``.

Each ``*.jsonl`` line is one ``recv()`` (asterisk->server) or
one ``sendall()`` (server->asterisk), so the TCP chunking Asterisk produced is
kept; see the README in that directory for the format.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

TRACES = Path(__file__).resolve().parents[1] / "data" / "asterisk-traces"

FROM_ASTERISK = "asterisk->server"
FROM_SERVER = "server->asterisk"


@dataclass(frozen=True)
class Chunk:
    """One recv() or sendall() of a trace."""

    t: float
    direction: str
    conn: int
    data: bytes
    eof: bool = False
    connect: bool = False

    @property
    def from_asterisk(self) -> bool:
        return self.direction == FROM_ASTERISK

    @property
    def from_server(self) -> bool:
        return self.direction == FROM_SERVER


@dataclass(frozen=True)
class Session:
    """One FastAGI connection of a trace, in the order it happened."""

    trace: str
    conn: int
    chunks: tuple[Chunk, ...]

    @property
    def id(self) -> str:
        return f"{self.trace}#{self.conn}"

    @property
    def asterisk_chunks(self) -> list[bytes]:
        """What Asterisk wrote, one item per recv() of the recording."""
        return [c.data for c in self.chunks if c.from_asterisk and c.data]

    @property
    def asterisk_bytes(self) -> bytes:
        return b"".join(self.asterisk_chunks)

    @property
    def commands(self) -> list[str]:
        """The command lines the server sent (with their line ending)."""
        lines: list[str] = []
        for chunk in self.chunks:
            if chunk.from_server and chunk.data:
                lines.extend(chunk.data.decode("utf-8").splitlines(keepends=True))
        return lines

    def steps(self) -> tuple[list[bytes], list[tuple[str, list[bytes]]], list[bytes]]:
        """The session as a server would live it.

        Returns (environment chunks, [(command line, the chunks Asterisk wrote
        after it and before the next command)], chunks after the server's FIN).
        """
        env: list[bytes] = []
        steps: list[tuple[str, list[bytes]]] = []
        after_fin: list[bytes] = []
        server_done = False
        for chunk in self.chunks:
            if chunk.from_server:
                if chunk.eof:
                    server_done = True
                elif chunk.data:
                    for line in chunk.data.decode("utf-8").splitlines(keepends=True):
                        steps.append((line, []))
            elif chunk.data:
                if server_done:
                    after_fin.append(chunk.data)
                elif steps:
                    steps[-1][1].append(chunk.data)
                else:
                    env.append(chunk.data)
        return env, steps, after_fin


def trace_dir() -> Path:
    if not TRACES.is_dir():
        pytest.fail(
            f"Asterisk traces not found at {TRACES} (tests/data/asterisk-traces/*.jsonl "
            "belongs to the repository)",
            pytrace=False,
        )
    return TRACES


def _chunk(record: dict) -> Chunk:
    if "b64" in record:
        data = base64.b64decode(record["b64"])
    else:
        data = record.get("data", "").encode("utf-8")
    return Chunk(
        t=float(record["t"]),
        direction=record["dir"],
        conn=int(record.get("conn", 1)),
        data=data,
        eof=bool(record.get("eof", False)),
        connect=record.get("event") == "connect",
    )


@cache
def load(name: str) -> tuple[Chunk, ...]:
    """All chunks of ``<name>.jsonl`` in recorded order."""
    path = trace_dir() / f"{name}.jsonl"
    if not path.is_file():
        pytest.fail(f"trace {path.name} is missing from {path.parent}", pytrace=False)
    with path.open(encoding="utf-8") as lines:
        return tuple(_chunk(json.loads(line)) for line in lines if line.strip())


def sessions(name: str) -> list[Session]:
    """The connections of one trace, each in recorded order."""
    by_conn: dict[int, list[Chunk]] = {}
    for chunk in load(name):
        by_conn.setdefault(chunk.conn, []).append(chunk)
    return [Session(name, conn, tuple(chunks)) for conn, chunks in sorted(by_conn.items())]


def session(name: str, conn: int = 1) -> Session:
    for found in sessions(name):
        if found.conn == conn:
            return found
    raise KeyError(f"{name} has no connection {conn}")


def agi_trace_names() -> list[str]:
    """``agi-*.jsonl`` scenarios plus the FastAGI stubs of the AMI queue scenarios."""
    directory = trace_dir()
    names = [p.name[: -len(".jsonl")] for p in directory.glob("agi-*.jsonl") if ".observer-" not in p.name]
    names += [p.name[: -len(".jsonl")] for p in directory.glob("*.agi.jsonl")]
    if not any(name.startswith("agi-") for name in names):
        pytest.fail(f"no agi-*.jsonl traces in {directory}", pytrace=False)
    return sorted(names)


def agi_sessions() -> list[Session]:
    return [s for name in agi_trace_names() for s in sessions(name)]
