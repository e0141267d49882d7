"""The CRM lookup: one E.164 number to the complete `CallerProfile`.

`SqlSource` is the SQL `caller_id.directory.Source` of `CallerDirectory`.
It answers in three indexed queries whatever the number hides (one person,
a person who is also the director of two companies, a shared office line of
several employees):

1. the number's roles joined with their customers, organisations and both
   kinds of managers (``phone_numbers.e164`` unique index, then
   ``ix_number_roles_number``);
2. the cases of those customers that are open or were closed within
   `closed_case_days` (``ix_cases_customer_status``).  The schema has no
   closing time, so a closed case's ``updated_at`` stands for it;
3. the last `recent_call_limit` calls within `recent_call_days` made by those
   customers or from this number (``ix_call_records_customer_started``,
   ``ix_call_records_number``).

The queries run in autocommit mode on one pooled connection: a read-only
lookup needs no transaction, and leaving it out saves the BEGIN and ROLLBACK
round trips on PostgreSQL.  On SQLite all three run on one worker thread
with a blocking connection (one thread hop per lookup instead of one per
cursor call).  `_statements` is the lookup itself, written once: a generator
that yields each statement and receives its rows, driven by either.

`warm_up` runs before the first call: it opens every reading connection and
runs each statement once on it.  A cold lookup (connection opened, statement
compiled, on PostgreSQL prepared) costs several warm ones, and a burst of
first calls would otherwise pay that in its lookup budget.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import aliased

from caller_id import models as m
from caller_id.profile import Case, CallerProfile, Customer, Manager, Organisation, RecentCall, Role
from caller_id.store import Database, as_utc

__all__ = ["SqlSource"]

READ_THREADS = 4  # SQLite lookups at once
_WARM_UP_TIMEOUT = 30.0  # seconds the reading threads may take to open their connections

# The statuses `caller_id.profile.Case.is_open` treats as closed.
CLOSED_STATUSES = ("closed", "resolved", "cancelled")

_CustomerManager = aliased(m.Agent, name="customer_manager")
_OrganisationManager = aliased(m.Agent, name="organisation_manager")


class SqlSource:
    """Caller profiles from the CRM tables of `db`."""

    name = "sql"

    def __init__(
        self,
        db: Database,
        *,
        closed_case_days: float = 30.0,
        recent_call_days: float = 30.0,
        recent_call_limit: int = 5,
        clock: Callable[[], dt.datetime] = m.utcnow,
    ):
        if closed_case_days < 0 or recent_call_days < 0:
            raise ValueError("closed_case_days and recent_call_days must not be negative")
        if recent_call_limit < 0:
            raise ValueError("recent_call_limit must not be negative")
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        blocking = db.blocking_engine()
        self._blocking = blocking.execution_options(isolation_level="AUTOCOMMIT") if blocking else None
        self._executor = (
            ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="crm-read")
            if blocking is not None else None
        )
        self._pool_size = db.pool_size
        self._closed_case_window = dt.timedelta(days=closed_case_days)
        self._recent_call_window = dt.timedelta(days=recent_call_days)
        self._recent_call_limit = recent_call_limit
        self._clock = clock

    async def lookup(self, number: str) -> CallerProfile | None:
        """The profile behind E.164 `number`, or None when the CRM does not know it."""
        steps = self._statements(number, self._clock())
        if self._blocking is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._drive_blocking, steps)
        async with self._engine.connect() as conn:
            try:
                statement, params = next(steps)
                while True:
                    statement, params = steps.send((await conn.execute(statement, params)).all())
            except StopIteration as done:
                return done.value

    def _drive_blocking(self, steps: Generator[Any, list[Any], CallerProfile | None]) -> CallerProfile | None:
        assert self._blocking is not None
        with self._blocking.connect() as conn:
            try:
                statement, params = next(steps)
                while True:
                    statement, params = steps.send(conn.execute(statement, params).all())
            except StopIteration as done:
                return done.value

    async def warm_up(self) -> None:
        """Open every reading connection and run each lookup statement on it once."""
        if self._blocking is not None:
            loop = asyncio.get_running_loop()
            together = threading.Barrier(READ_THREADS, timeout=_WARM_UP_TIMEOUT)
            await asyncio.gather(*(loop.run_in_executor(self._executor, self._warm_blocking, together)
                                   for _ in range(READ_THREADS)))
            return
        async with AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(self._engine.connect()) for _ in range(self._pool_size)]
            for conn in connections:
                for statement, params in self._warm_up_statements():
                    await conn.execute(statement, params)

    def _warm_blocking(self, together: threading.Barrier) -> None:
        assert self._blocking is not None
        with self._blocking.connect() as conn:
            for statement, params in self._warm_up_statements():
                conn.execute(statement, params).all()
            together.wait()  # every thread holds its own connection: none reuses another's

    def _warm_up_statements(self) -> list[tuple[Any, dict[str, Any]]]:
        now = self._clock()
        return [
            (_ROLES, {"number": ""}),
            (_CASES, {"customer_ids": [0], "closed_since": now}),
            (_RECENT_CALLS, {"number": "", "customer_ids": [0], "since": now, "limit": 1}),
        ]

    def _statements(self, number: str, now: dt.datetime) -> Generator[Any, list[Any], CallerProfile | None]:
        role_rows = yield _ROLES, {"number": number}
        if not role_rows:
            return None
        customer_ids = sorted({row.customer_id for row in role_rows})
        case_rows = yield _CASES, {"customer_ids": customer_ids,
                                   "closed_since": now - self._closed_case_window}
        call_rows: list[Any] = []
        if self._recent_call_limit:
            call_rows = yield _RECENT_CALLS, {
                "number": number, "customer_ids": customer_ids,
                "since": now - self._recent_call_window, "limit": self._recent_call_limit,
            }
        return _profile(number, role_rows, case_rows, call_rows)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _roles_query() -> Any:
    cm, om = _CustomerManager, _OrganisationManager
    return (
        select(
            m.NumberRole.kind.label("kind"),
            m.Customer.id.label("customer_id"),
            m.Customer.name.label("customer_name"),
            m.Customer.segment.label("customer_segment"),
            m.Customer.is_vip.label("customer_is_vip"),
            m.Customer.language.label("customer_language"),
            cm.id.label("customer_manager_id"),
            cm.name.label("customer_manager_name"),
            cm.interface.label("customer_manager_interface"),
            m.Organisation.id.label("organisation_id"),
            m.Organisation.name.label("organisation_name"),
            m.Organisation.segment.label("organisation_segment"),
            m.Organisation.is_vip.label("organisation_is_vip"),
            om.id.label("organisation_manager_id"),
            om.name.label("organisation_manager_name"),
            om.interface.label("organisation_manager_interface"),
        )
        .select_from(m.PhoneNumber)
        .join(m.NumberRole, m.NumberRole.number_id == m.PhoneNumber.id)
        .join(m.Customer, m.Customer.id == m.NumberRole.customer_id)
        .outerjoin(cm, cm.id == m.Customer.manager_id)
        .outerjoin(m.Organisation, m.Organisation.id == m.NumberRole.organisation_id)
        .outerjoin(om, om.id == m.Organisation.manager_id)
        .where(m.PhoneNumber.e164 == bindparam("number"))
        .order_by(m.NumberRole.id)
    )


def _cases_query() -> Any:
    c = m.Case
    return (
        select(
            c.id, c.customer_id, c.organisation_id, c.product, c.title, c.status, c.priority,
            c.opened_at, c.updated_at, c.due_at, c.customer_owes_next_step, c.facts,
        )
        .where(c.customer_id.in_(bindparam("customer_ids", expanding=True)))
        .where(or_(c.status.not_in(CLOSED_STATUSES), c.updated_at >= bindparam("closed_since")))
        .order_by(c.priority, c.updated_at.desc(), c.id)
    )


def _recent_calls_query() -> Any:
    r = m.CallRecord
    return (
        select(r.started_at, r.line, r.actual_intent, r.predicted_intent, r.queue, r.self_served)
        .where(or_(r.customer_id.in_(bindparam("customer_ids", expanding=True)), r.number == bindparam("number")))
        .where(r.started_at >= bindparam("since"))
        .order_by(r.started_at.desc(), r.id.desc())
        .limit(bindparam("limit"))
    )


# Built once: constructing a statement costs more than running it on SQLite.
_ROLES = _roles_query()
_CASES = _cases_query()
_RECENT_CALLS = _recent_calls_query()


def _profile(
    number: str, role_rows: Iterable[Any], case_rows: Iterable[Any], call_rows: Iterable[Any]
) -> CallerProfile:
    cases_of: dict[int, list[Case]] = {}
    for row in case_rows:
        cases_of.setdefault(row.customer_id, []).append(
            Case(
                id=row.id, product=row.product, title=row.title, status=row.status,
                priority=row.priority, opened_at=as_utc(row.opened_at),
                updated_at=as_utc(row.updated_at), due_at=None if row.due_at is None else as_utc(row.due_at),
                customer_owes_next_step=bool(row.customer_owes_next_step),
                facts=dict(row.facts or {}), organisation_id=row.organisation_id,
            )
        )
    customers: dict[int, Customer] = {}
    roles: list[Role] = []
    for row in role_rows:
        if row.customer_id not in customers:
            customers[row.customer_id] = Customer(
                id=row.customer_id, name=row.customer_name, segment=row.customer_segment,
                is_vip=bool(row.customer_is_vip), language=row.customer_language,
                manager=_manager(row.customer_manager_id, row.customer_manager_name,
                                 row.customer_manager_interface),
                cases=tuple(cases_of.get(row.customer_id, ())),
            )
        organisation = None
        if row.organisation_id is not None:
            organisation = Organisation(
                id=row.organisation_id, name=row.organisation_name,
                segment=row.organisation_segment, is_vip=bool(row.organisation_is_vip),
                manager=_manager(row.organisation_manager_id, row.organisation_manager_name,
                                 row.organisation_manager_interface),
            )
        roles.append(Role(kind=row.kind, customer_id=row.customer_id, organisation=organisation))
    recent = tuple(
        RecentCall(
            started_at=as_utc(row.started_at), line=row.line,
            intent=row.actual_intent or row.predicted_intent, queue=row.queue,
            self_served=bool(row.self_served),
        )
        for row in call_rows
    )
    return CallerProfile(
        number=number, customers=tuple(customers.values()), roles=tuple(roles), recent_calls=recent,
    )


def _manager(manager_id: int | None, name: str | None, interface: str | None) -> Manager | None:
    if manager_id is None:
        return None
    return Manager(id=manager_id, name=name or "", interface=interface or "")

