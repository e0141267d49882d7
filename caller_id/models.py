"""The CRM data model (SQLAlchemy 2, works on SQLite and PostgreSQL).

Organisations and customers (people) with segment, VIP flag, language and
personal manager; phone numbers with one or more roles each; cases with the
facts self-service answers need; agents (and managers, who are agents with a
flag) with their Asterisk interface; call records.

The schema is created and upgraded by the Alembic migrations in
`caller_id/migrations`; `Base.metadata` here is what they are checked against.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Agent(Base):
    """A person who takes calls; `is_manager` marks personal/key-account managers."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    interface: Mapped[str] = mapped_column(String(200), unique=True)  # e.g. PJSIP/1001
    extension: Mapped[str | None] = mapped_column(String(40))
    is_manager: Mapped[bool] = mapped_column(Boolean, default=False)
    team: Mapped[str | None] = mapped_column(String(80))


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    inn: Mapped[str | None] = mapped_column(String(20), unique=True)  # tax id
    segment: Mapped[str] = mapped_column(String(1), default="C")
    is_vip: Mapped[bool] = mapped_column(Boolean, default=False)
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    manager: Mapped[Agent | None] = relationship(lazy="raise")

    __table_args__ = (CheckConstraint("segment IN ('A','B','C','D')", name="ck_org_segment"),)


class Customer(Base):
    """A person the company deals with, privately or on behalf of organisations."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)  # id in the source CRM
    name: Mapped[str] = mapped_column(String(300))
    segment: Mapped[str] = mapped_column(String(1), default="C")
    is_vip: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(8), default="ru")
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    manager: Mapped[Agent | None] = relationship(lazy="raise")

    __table_args__ = (CheckConstraint("segment IN ('A','B','C','D')", name="ck_customer_segment"),)


class PhoneNumber(Base):
    """A number in E.164 form; its roles say whose number it is and how."""

    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    e164: Mapped[str] = mapped_column(String(20), unique=True)


class NumberRole(Base):
    """One role of a number: `kind` private / employee / director.

    `organisation_id` is set for employee and director roles.
    """

    __tablename__ = "number_roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("phone_numbers.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE")
    )

    __table_args__ = (
        UniqueConstraint("number_id", "customer_id", "kind", "organisation_id", name="uq_number_role"),
        CheckConstraint("kind IN ('private','employee','director')", name="ck_role_kind"),
        Index("ix_number_roles_number", "number_id"),
        Index("ix_number_roles_customer", "customer_id"),
    )


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE")
    )
    product: Mapped[str] = mapped_column(String(80))
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=3)  # 1 highest .. 5 lowest
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    due_at: Mapped[dt.datetime | None]
    customer_owes_next_step: Mapped[bool] = mapped_column(Boolean, default=False)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_cases_customer_status", "customer_id", "status"),)


class CallRecord(Base):
    """One call: who, predicted vs confirmed reason, self-service, queue, times, how it ended, survey.

    result        how the call ended: self_served, ivr_hangup (in the IVR, before a queue),
                  answered (by an agent of the queue), manager (by the personal manager),
                  transferred (by the agent who answered), abandoned (hung up waiting),
                  unanswered (left the queues unanswered)
    transferred_to where the agent transferred it: ``extension@context`` (blind), the target's
                  interface or the application it ran (attended)
    actual_intent the real reason, confirmed by ``confirmed_by``: caller (in the dialog) or agent
                  (the disposition)
    csat, nps     the survey's answers (1-5, 0-10); ``survey`` complete or partial
    """

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)  # IVR_CALL_ID
    uniqueid: Mapped[str | None] = mapped_column(String(64), index=True)  # Asterisk channel id
    linkedid: Mapped[str | None] = mapped_column(String(64), index=True)
    number: Mapped[str | None] = mapped_column(String(20), index=True)  # E.164 or NULL
    line: Mapped[str | None] = mapped_column(String(40))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    role_kind: Mapped[str | None] = mapped_column(String(16))
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="SET NULL")
    )
    segment: Mapped[str | None] = mapped_column(String(1))
    predicted_intent: Mapped[str | None] = mapped_column(String(64))
    predicted_score: Mapped[float | None] = mapped_column(Float)
    predicted_intent_2: Mapped[str | None] = mapped_column(String(64))
    predicted_intent_3: Mapped[str | None] = mapped_column(String(64))
    actual_intent: Mapped[str | None] = mapped_column(String(64))
    confirmed_by: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[str | None] = mapped_column(String(16))
    transferred_to: Mapped[str | None] = mapped_column(String(80))
    outcome: Mapped[str | None] = mapped_column(String(64))
    self_served: Mapped[bool] = mapped_column(Boolean, default=False)
    queue: Mapped[str | None] = mapped_column(String(80))
    priority: Mapped[int | None] = mapped_column(Integer)
    rule: Mapped[str | None] = mapped_column(String(80))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    csat: Mapped[int | None] = mapped_column(Integer)
    nps: Mapped[int | None] = mapped_column(Integer)
    survey: Mapped[str | None] = mapped_column(String(16))
    degraded: Mapped[str | None] = mapped_column(String(200))  # why the call path failed open
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # IVR transcript etc.

    __table_args__ = (
        Index("ix_call_records_customer_started", "customer_id", "started_at"),
        Index("ix_call_records_agent_started", "agent_id", "started_at"),  # an agent's own calls (web access)
    )


class CrmVersion(Base):
    """A single-row counter bumped on every CRM change; caches key on it."""

    __tablename__ = "crm_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class User(Base):
    """Someone who logs in to the web pages: an agent, a supervisor or an admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("role IN ('agent','supervisor','admin')", name="ck_user_role"),)


class WebSession(Base):
    """A login: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
