"""Users and log-in sessions in SQL (migration 0002) on SQLite and PostgreSQL, without the web server."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from sqlalchemy import select, update

from caller_id.models import Agent, User, WebSession
from ivr.web import auth
from ivr.web.auth import Sessions, add_user, hash_password, verify_password

PASSWORD = "long enough 1"


async def _agent(db) -> int:
    async with db.session() as session:
        agent = Agent(name="Анна Лебедева", interface="PJSIP/1001", extension="1001", is_manager=False, team="cc")
        session.add(agent)
        await session.commit()
        return agent.id


async def test_users_and_sessions_round_trip(migrated_db):
    agent_id = await _agent(migrated_db)
    user_id = await add_user(migrated_db, "anna", PASSWORD, "agent", agent_id)
    await add_user(migrated_db, "boss", PASSWORD, "admin")
    with pytest.raises(ValueError, match="exists already"):
        await add_user(migrated_db, "anna", PASSWORD, "supervisor")

    sessions = Sessions(migrated_db, ttl=600)
    assert await sessions.log_in("anna", "wrong password", "10.0.0.1") is None
    token, user = await sessions.log_in("anna", PASSWORD, "10.0.0.1")
    assert (user.id, user.role, user.agent_id) == (user_id, "agent", agent_id)
    async with migrated_db.session() as session:
        stored = await session.scalar(select(WebSession).where(WebSession.user_id == user_id))
    assert stored.token_hash != token and token not in stored.token_hash  # only a hash is kept

    again = await sessions.user_for(token)
    assert again is not None and again.csrf_token == user.csrf_token and again.has("agent")
    assert not again.has("supervisor")
    assert await sessions.user_for(token + "x") is None
    assert await sessions.log_out(token) == user.session_id
    assert await sessions.user_for(token) is None


async def test_expiry_slides_with_use_and_ends_an_idle_session(migrated_db):
    await add_user(migrated_db, "sup", PASSWORD, "supervisor")
    sessions = Sessions(migrated_db, ttl=600)
    token, user = await sessions.log_in("sup", PASSWORD, "10.0.0.2")
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=500)
    async with migrated_db.session() as session:
        await session.execute(update(WebSession).values(last_seen=long_ago, expires_at=long_ago
                                                        + dt.timedelta(seconds=600)))
        await session.commit()
    assert await sessions.user_for(token) is not None  # used 500 s after: pushed on by another 600 s
    async with migrated_db.session() as session:
        expires = await session.scalar(select(WebSession.expires_at))
    expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.timezone.utc)
    assert expires > dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=590)

    async with migrated_db.session() as session:
        await session.execute(update(WebSession).values(
            expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
        await session.commit()
    assert await sessions.user_for(token) is None
    async with migrated_db.session() as session:  # and the row is gone
        assert await session.scalar(select(WebSession.id)) is None


async def test_a_deactivated_user_is_logged_out_and_cannot_log_in(migrated_db):
    await add_user(migrated_db, "sup", PASSWORD, "supervisor")
    sessions = Sessions(migrated_db, ttl=600)
    token, _ = await sessions.log_in("sup", PASSWORD, "10.0.0.3")
    async with migrated_db.session() as session:
        await session.execute(update(User).values(active=False))
        await session.commit()
    assert await sessions.user_for(token) is None
    assert await sessions.log_in("sup", PASSWORD, "10.0.0.3") is None


async def test_add_user_refuses_what_the_database_would_refuse_too(migrated_db):
    with pytest.raises(ValueError, match="no agent with id 42"):
        await add_user(migrated_db, "ghost", PASSWORD, "agent", 42)
    with pytest.raises(ValueError, match="at least 8"):
        await add_user(migrated_db, "short", "1234567", "admin")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        await add_user(migrated_db, "root", PASSWORD, "root")
    async with migrated_db.session() as session:
        assert (await session.scalars(select(User))).all() == []


def test_the_hash_keeps_its_parameters_and_old_parameters_still_verify():
    stored = hash_password("pässwörd-ünïcode")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert verify_password("pässwörd-ünïcode", stored)
    # a hash made with other (cheaper) parameters still verifies: they travel in the string
    import base64
    import hashlib

    cheap = hashlib.scrypt(b"old password", salt=b"0123456789abcdef", n=2**10, r=8, p=1, dklen=32)
    b64 = base64.urlsafe_b64encode
    old = f"scrypt$1024$8$1${b64(b'0123456789abcdef').decode()}${b64(cheap).decode()}"
    assert verify_password("old password", old) and not verify_password("old passwore", old)
    assert not verify_password("x", "scrypt$bad") and not verify_password("x", "")


async def test_hashing_does_not_stall_the_event_loop():
    """A log-in hashes in a worker thread: the loop that also serves calls keeps turning."""
    began = time.perf_counter()
    hash_password(PASSWORD)
    one_hash = time.perf_counter() - began
    stalls: list[float] = []

    async def watch() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - before)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.01)
    stored = await auth.hash_password_async(PASSWORD)
    assert await auth.verify_password_async(PASSWORD, stored)
    watcher.cancel()
    assert max(stalls) < one_hash / 2, (max(stalls), one_hash)
