"""`ivr demo` for a few seconds: real FastAGI calls, real AMI events, call records, cards on the hub."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from ivr.demo import DEMO_PASSWORD, run_demo
from ivr.web.auth import verify_password


async def test_demo_places_calls_through_the_whole_server(base_config, unused_tcp_port_factory):
    config = replace(
        base_config,
        agi=replace(base_config.agi, port=unused_tcp_port_factory()),
        web=replace(base_config.web, port=unused_tcp_port_factory()),
        lines=tuple(replace(line, self_service="dtmf") for line in base_config.lines),
    )
    said: list[str] = []
    stats = await run_demo(config, calls_per_minute=240, duration=8, seed=3, talk=(0.5, 1.5), say=said.append)
    assert stats.errors == 0, said
    assert stats.calls >= 10
    assert stats.queued >= 3 and stats.answered >= 1
    assert stats.self_served >= 1  # callers pressing 1, 1, 5 in the dialog
    assert any("answered by" in line for line in said)

    path = config.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        records = db.execute("SELECT call_id, queue, agent_id, answered_at, self_served FROM call_records").fetchall()
        users = dict(db.execute("SELECT username, password_hash FROM users").fetchall())
    assert len(records) >= stats.calls - 2  # the last calls may still be in flight when the demo stops
    assert any(r[2] is not None and r[3] is not None for r in records)  # AgentConnect reached the records
    assert any(r[4] for r in records)
    assert verify_password(DEMO_PASSWORD, users["supervisor"]) and "agent1001" in users
