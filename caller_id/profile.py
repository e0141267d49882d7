"""What the server knows about a caller: plain, immutable values.

A `CallerProfile` is everything behind one calling number: the customers it
belongs to, each role the number plays (private client, employee or director
of an organisation), their cases and their recent calls.  A `CallerView` is
the same caller seen in one chosen role: the segment, VIP flag, manager and
cases that apply to this call.  Prediction and routing work on views.

These classes hold no database objects, so a profile can be cached, sent to
another process or rendered as JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

ROLE_PRIVATE = "private"
ROLE_EMPLOYEE = "employee"
ROLE_DIRECTOR = "director"
ROLE_KINDS = (ROLE_PRIVATE, ROLE_EMPLOYEE, ROLE_DIRECTOR)
SEGMENTS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Manager:
    """A personal manager or key-account manager, dialled by `interface`."""

    id: int
    name: str
    interface: str  # Asterisk dial string, e.g. "PJSIP/1001"


@dataclass(frozen=True)
class Organisation:
    id: int
    name: str
    segment: str
    is_vip: bool = False
    manager: Manager | None = None


@dataclass(frozen=True)
class Case:
    """An open (or recently closed) CRM case.

    `facts` carries what a self-service answer needs, e.g.
    ``{"ready_date": "2026-12-03", "branch": "Tverskaya"}``.
    `organisation_id` is set when the case belongs to the organisation
    rather than to the person privately.
    """

    id: int
    product: str
    title: str
    status: str
    priority: int
    opened_at: dt.datetime
    updated_at: dt.datetime
    due_at: dt.datetime | None = None
    customer_owes_next_step: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    organisation_id: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in ("closed", "resolved", "cancelled")


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    segment: str
    is_vip: bool = False
    language: str = "ru"
    manager: Manager | None = None
    cases: tuple[Case, ...] = ()


@dataclass(frozen=True)
class Role:
    """One role a number plays: `kind` is one of ROLE_KINDS."""

    kind: str
    customer_id: int
    organisation: Organisation | None = None

    @property
    def label(self) -> str:
        if self.organisation is None:
            return self.kind
        return f"{self.kind} of {self.organisation.name}"


@dataclass(frozen=True)
class RecentCall:
    started_at: dt.datetime
    line: str | None = None
    intent: str | None = None
    queue: str | None = None
    self_served: bool = False


@dataclass(frozen=True)
class CallerView:
    """The caller in the role that applies to this call.

    For an organisation role, segment, VIP and manager come from the
    organisation (a director of a VIP company is a VIP caller) and the cases
    are those of that organisation; for a private role, from the person.
    An unknown caller is a view with `customer` None.
    """

    number: str | None
    customer: Customer | None = None
    role: Role | None = None
    segment: str | None = None
    is_vip: bool = False
    language: str | None = None
    manager: Manager | None = None
    cases: tuple[Case, ...] = ()
    recent_calls: tuple[RecentCall, ...] = ()

    @property
    def is_known(self) -> bool:
        return self.customer is not None

    @property
    def organisation(self) -> Organisation | None:
        return self.role.organisation if self.role else None

    @property
    def has_manager(self) -> bool:
        return self.manager is not None


@dataclass(frozen=True)
class CallerProfile:
    """Everything behind one number.  `number` is E.164 or None (unknown)."""

    number: str | None
    customers: tuple[Customer, ...] = ()
    roles: tuple[Role, ...] = ()
    recent_calls: tuple[RecentCall, ...] = ()

    @property
    def is_known(self) -> bool:
        return bool(self.customers)

    def customer(self, customer_id: int) -> Customer | None:
        for customer in self.customers:
            if customer.id == customer_id:
                return customer
        return None

    def view(self, role: Role | None = None) -> CallerView:
        """The caller seen in `role` (default: the only role, if just one)."""
        if role is None:
            if len(self.roles) != 1:
                return CallerView(number=self.number, recent_calls=self.recent_calls)
            role = self.roles[0]
        customer = self.customer(role.customer_id)
        if customer is None:
            return CallerView(number=self.number, recent_calls=self.recent_calls)
        org = role.organisation
        if org is None:
            cases = tuple(c for c in customer.cases if c.organisation_id is None)
            return CallerView(
                number=self.number, customer=customer, role=role,
                segment=customer.segment, is_vip=customer.is_vip,
                language=customer.language, manager=customer.manager,
                cases=cases, recent_calls=self.recent_calls,
            )
        cases = tuple(c for c in customer.cases if c.organisation_id == org.id)
        return CallerView(
            number=self.number, customer=customer, role=role,
            segment=org.segment, is_vip=org.is_vip or customer.is_vip,
            language=customer.language, manager=org.manager or customer.manager,
            cases=cases, recent_calls=self.recent_calls,
        )

    def to_dict(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallerProfile:
        return _decode(cls, data)


UNKNOWN = CallerProfile(number=None)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _decode(cls: type, data: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _decode_field(cls, f.name, data[f.name])
    return cls(**kwargs)


_FIELD_TYPES: dict[str, Any] = {
    "customers": ("tuple", Customer),
    "roles": ("tuple", Role),
    "recent_calls": ("tuple", RecentCall),
    "cases": ("tuple", Case),
    "manager": ("one", Manager),
    "organisation": ("one", Organisation),
}
_DATETIME_FIELDS = {"opened_at", "updated_at", "due_at", "started_at"}


def _decode_field(cls: type, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _DATETIME_FIELDS:
        return dt.datetime.fromisoformat(value)
    kind = _FIELD_TYPES.get(name)
    if kind is None:
        return value
    shape, target = kind
    if shape == "tuple":
        return tuple(_decode(target, item) for item in value)
    return _decode(target, value)
