"""Bulk import: CSV and JSON lines, all or nothing, upserts, E.164 numbers."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from caller_id.importer import CASE_STATUSES, FORMAT_HELP, LANGUAGES, ImportRowsError, import_file
from caller_id.models import Agent, Case, Customer, NumberRole, Organisation, PhoneNumber

DATA = Path(__file__).parent / "data"
PROJECT = Path(__file__).resolve().parents[2]
ISO_639 = Path("/usr/share/iso-codes/json/iso_639-2.json")
COMPANY_INN = "7712345671"
TRADER_INN = "771234567859"


async def _count(db, model) -> int:
    async with db.session() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def _roles(db) -> set[tuple[str, str, str, str | None]]:
    """(e164, customer id, kind, organisation inn) of every number role."""
    query = (
        select(PhoneNumber.e164, Customer.external_id, NumberRole.kind, Organisation.inn)
        .join(NumberRole, NumberRole.number_id == PhoneNumber.id)
        .join(Customer, Customer.id == NumberRole.customer_id)
        .outerjoin(Organisation, Organisation.id == NumberRole.organisation_id)
    )
    async with db.session() as session:
        return set(map(tuple, (await session.execute(query)).all()))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("sample", ["crm_sample.csv", "crm_sample.jsonl"])
async def test_sample_file_imports_every_kind_with_numbers_in_e164(migrated_db, sample):
    summary = await import_file(migrated_db, DATA / sample)

    assert summary.rows == {"agent": 2, "organisation": 2, "customer": 3, "number": 5, "case": 3}
    assert summary.created == {"agent": 2, "organisation": 2, "customer": 3, "number": 5, "case": 3}
    assert summary.numbers == {"+79161234567", "+442079460958", "+74951234567"}
    assert await _roles(migrated_db) == {
        ("+79161234567", "CRM-1001", "private", None),
        ("+79161234567", "CRM-1001", "employee", COMPANY_INN),
        ("+442079460958", "CRM-1002", "private", None),
        ("+74951234567", "CRM-1003", "director", TRADER_INN),
        ("+74951234567", "CRM-1001", "employee", TRADER_INN),
    }
    async with migrated_db.session() as session:
        petrov = await session.scalar(select(Customer).where(Customer.external_id == "CRM-1001"))
        manager = await session.get(Agent, petrov.manager_id)
        card = await session.scalar(select(Case).where(Case.external_id == "T-1"))
        contract = await session.scalar(select(Case).where(Case.external_id == "T-2"))
        company = await session.scalar(select(Organisation).where(Organisation.inn == COMPANY_INN))
        jane = await session.scalar(select(Customer).where(Customer.external_id == "CRM-1002"))
    assert (petrov.name, petrov.segment, petrov.is_vip, petrov.language) == ("Петров Иван Сергеевич", "B", False, "ru")
    assert manager.interface == "PJSIP/2001" and manager.is_manager
    assert (company.segment, company.is_vip) == ("A", True)
    assert jane.language == "en"
    assert card.facts == {"ready_date": "2026-12-03", "branch": "Тверская", "product_name": "metal"}
    assert (card.status, card.priority, card.organisation_id) == ("ready", 2, None)
    assert card.opened_at.replace(tzinfo=dt.timezone.utc) == dt.datetime(2026, 11, 1, 7, 0, tzinfo=dt.timezone.utc)
    assert card.due_at.replace(tzinfo=dt.timezone.utc) == dt.datetime(2026, 12, 3, 23, 59, 59, tzinfo=dt.timezone.utc)
    assert contract.customer_owes_next_step and contract.organisation_id == company.id
    assert contract.notes == "Клиент обещал принести устав.\nПерезвонить в пятницу."


async def test_import_bumps_the_crm_version(migrated_db):
    before = await migrated_db.crm_version()
    summary = await import_file(migrated_db, DATA / "crm_sample.csv")
    assert summary.crm_version == before + 1 == await migrated_db.crm_version()


async def test_reimporting_the_same_file_updates_instead_of_duplicating(migrated_db):
    await import_file(migrated_db, DATA / "crm_sample.jsonl")
    counts = {model: await _count(migrated_db, model)
              for model in (Agent, Organisation, Customer, PhoneNumber, NumberRole, Case)}

    again = await import_file(migrated_db, DATA / "crm_sample.jsonl")

    assert again.created == {"agent": 0, "organisation": 0, "customer": 0, "number": 0, "case": 0}
    assert again.updated == {"agent": 2, "organisation": 2, "customer": 3, "number": 0, "case": 3}
    assert {model: await _count(migrated_db, model) for model in counts} == counts


async def test_reimport_changes_fields_and_keeps_opened_date_when_blank(migrated_db, tmp_path):
    await import_file(migrated_db, DATA / "crm_sample.jsonl")
    changed = _write_jsonl(tmp_path / "changes.jsonl", [
        {"kind": "customer", "id": "CRM-1002", "name": "Jane Doe-Smith", "segment": "A", "is_vip": True,
         "language": "en"},
        {"kind": "case", "id": "T-3", "customer": "CRM-1002", "product": "loan",
         "title": "Personal loan application", "status": "resolved", "priority": 4},
    ])

    summary = await import_file(migrated_db, changed)

    async with migrated_db.session() as session:
        jane = await session.scalar(select(Customer).where(Customer.external_id == "CRM-1002"))
        loan = await session.scalar(select(Case).where(Case.external_id == "T-3"))
    assert (jane.name, jane.segment, jane.is_vip) == ("Jane Doe-Smith", "A", True)
    assert (loan.status, loan.priority, loan.facts) == ("resolved", 4, {})
    assert loan.opened_at.replace(tzinfo=dt.timezone.utc) == dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    # the customer's number is named so caches drop the stale profile
    assert summary.numbers == {"+442079460958"}


async def test_records_may_refer_to_data_imported_earlier(migrated_db, tmp_path):
    await import_file(migrated_db, DATA / "crm_sample.csv")
    later = _write_jsonl(tmp_path / "later.jsonl", [
        {"kind": "number", "number": "+7 (926) 000-11-22", "customer": "CRM-1003"},
        {"kind": "case", "id": "T-9", "customer": "CRM-1003", "organisation": TRADER_INN,
         "product": "account", "title": "Открытие счёта", "status": "new"},
    ])
    summary = await import_file(migrated_db, later)
    assert summary.created["number"] == 1 and summary.created["case"] == 1
    assert ("+79260001122", "CRM-1003", "private", None) in await _roles(migrated_db)
    # both numbers of the customer, the trader's other number included
    assert summary.numbers == {"+79260001122", "+74951234567"}


async def test_bad_rows_are_reported_with_their_line_and_nothing_is_written(migrated_db, tmp_path):
    header = ["kind", "id", "name", "segment", "number", "customer", "role", "organisation",
              "product", "title", "status", "notes"]
    rows = [
        ["customer", "C-1", "Иванов Иван", "B", "", "", "", "", "", "", "", ""],        # line 2
        ["customer", "C-2", "Смирнова Анна", "E", "", "", "", "", "", "", "", ""],      # line 3: segment
        ["number", "", "", "", "12345", "C-1", "", "", "", "", "", ""],                # line 4: number
        ["case", "K-1", "", "", "", "C-1", "", "", "card", "Перевыпуск", "ready",
         "две строки\nзаметки"],                                                        # lines 5-6
        ["number", "", "", "", "+79161234567", "C-404", "", "", "", "", "", ""],         # line 7: customer
        ["number", "", "", "", "+79161234567", "C-1", "employee", "", "", "", "", ""],   # line 8: no inn
        ["case", "K-2", "", "", "", "C-1", "", "", "card", "", "In Progress", ""],      # line 9: two problems
        ["case", "K-1", "", "", "", "C-1", "", "", "loan", "Кредит", "new", ""],        # line 10: repeat
    ]
    path = _write_csv(tmp_path / "bad.csv", header, rows)

    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)

    errors = dict(caught.value.errors)
    assert sorted(errors) == [3, 4, 7, 8, 9, 10]
    assert "segment 'E'" in errors[3]
    assert "not a valid phone number" in errors[4]
    assert "customer 'C-404' is neither in this file nor in the database" == errors[7]
    assert "needs the organisation's inn" in errors[8]
    assert "title is missing" in errors[9] and "'In Progress' is not a code" in errors[9]
    assert errors[10] == "repeats the case of line 5"
    assert str(path) in str(caught.value) and "line 4:" in str(caught.value)
    assert await _count(migrated_db, Customer) == 0
    assert await migrated_db.crm_version() == 0


async def test_one_bad_reference_discards_the_whole_file(migrated_db, tmp_path):
    records = [{"kind": "customer", "id": f"C-{i}", "name": f"Клиент {i}"} for i in range(50)]
    records.append({"kind": "customer", "id": "C-X", "name": "Без менеджера", "manager": "PJSIP/9999"})
    path = _write_jsonl(tmp_path / "refs.jsonl", records)
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    assert caught.value.errors == [(51, "manager 'PJSIP/9999' is neither in this file nor in the database")]
    assert await _count(migrated_db, Customer) == 0


async def test_jsonl_errors_count_physical_lines_including_blank_ones(migrated_db, tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text(
        '{"kind": "customer", "id": "C-1", "name": "Анна"}\n'
        "\n"
        "{not json}\n"
        '{"kind": "customer", "id": "C-2", "name": "Олег", "is_vip": "maybe"}\n'
        '["a list"]\n'
        '{"kind": "cutsomer", "id": "C-3", "name": "Ира"}\n',
        encoding="utf-8",
    )
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    lines = [line for line, _ in caught.value.errors]
    assert lines == [3, 4, 5, 6]
    assert "not JSON" in caught.value.errors[0][1]
    assert "is_vip 'maybe' is not true or false" in caught.value.errors[1][1]
    assert "kind 'cutsomer'" in caught.value.errors[3][1]


async def test_unknown_csv_column_is_reported_on_the_header_line(migrated_db, tmp_path):
    path = _write_csv(tmp_path / "typo.csv", ["kind", "id", "name", "segmnet"], [["customer", "C-1", "Анна", "A"]])
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    assert caught.value.errors == [(1, "unknown column(s) 'segmnet'")]


async def test_semicolon_separated_csv_with_byte_order_mark_is_read(migrated_db, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffkind;id;name;segment\ncustomer;C-1;Анна Петрова;A\n".encode("utf-8"))
    summary = await import_file(migrated_db, path)
    assert summary.created["customer"] == 1


async def test_file_that_is_not_utf8_names_the_line(migrated_db, tmp_path):
    path = tmp_path / "cp1251.csv"
    path.write_bytes("kind,id,name\ncustomer,C-1,Anna\ncustomer,C-2,".encode() + "Анна".encode("cp1251") + b"\n")
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    assert caught.value.errors == [(3, "not UTF-8 text")]


async def test_unsupported_file_type_is_refused_by_name(migrated_db, tmp_path):
    path = tmp_path / "crm.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match="crm.xlsx: unsupported file type"):
        await import_file(migrated_db, path)


async def test_national_numbers_are_read_in_the_given_region(migrated_db, tmp_path):
    path = _write_jsonl(tmp_path / "gb.jsonl", [
        {"kind": "customer", "id": "C-1", "name": "Jane Doe", "language": "en"},
        {"kind": "number", "number": "020 7946 0958", "customer": "C-1"},
    ])
    summary = await import_file(migrated_db, path, region="GB")
    assert summary.numbers == {"+442079460958"}


async def test_bad_number_is_masked_in_the_error(migrated_db, tmp_path):
    path = _write_jsonl(tmp_path / "n.jsonl", [
        {"kind": "customer", "id": "C-1", "name": "Анна"},
        {"kind": "number", "number": "+7 916 123 45 67 89 00", "customer": "C-1"},
    ])
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    assert "1234567" not in str(caught.value)


async def test_printed_summary_counts_numbers_without_showing_them(migrated_db):
    summary = await import_file(migrated_db, DATA / "crm_sample.csv")
    for text in (str(summary), repr(summary)):
        assert "+7916" not in text and "79161234567" not in text
    assert "3 customer rows (3 new, 0 updated)" in str(summary)
    assert "3 numbers touched" in str(summary)


async def test_a_cell_over_the_csv_field_limit_is_a_bad_row_and_nothing_is_imported(migrated_db, tmp_path):
    header = ["kind", "id", "name", "notes"]
    path = _write_csv(tmp_path / "huge.csv", header, [
        ["customer", "C-1", "Иванов Иван", ""],  # line 2: fine
        ["customer", "C-2", "Петров Пётр", "x" * 1_048_576],  # line 3: a 1 MB cell
        ["customer", "C-3", "Сидоров Сидор", ""],
    ])
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    assert [line for line, _ in caught.value.errors] == [3]
    assert "field larger than field limit" in caught.value.errors[0][1]
    assert len(str(caught.value)) < 1000  # the cell is not repeated in the report
    assert await _count(migrated_db, Customer) == 0


async def test_json_lines_nested_too_deeply_are_bad_rows(migrated_db, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(
        '{"kind": "customer", "id": "C-1", "name": "Анна"}\n'
        + "[" * 100_000 + "]" * 100_000 + "\n"  # line 2
        + '{"kind": "customer", "id": "C-2", "name": "Олег", "segment": ' + "[" * 900 + "]" * 900 + "}\n"  # 3
        + '{"kind": "case", "id": "K-1", "customer": "C-1", "product": "card", "title": "Карта", '
          '"status": "new", "facts": ' + '{"a": ' * 50 + "1" + "}" * 50 + "}\n"  # line 4
        + '{"kind": "customer", "id": "C-3", "name": "Ира", "language": "' + "e" * 2_000_000 + '"}\n',  # 5
        encoding="utf-8",
    )
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    errors = dict(caught.value.errors)
    assert sorted(errors) == [2, 3, 4, 5]
    assert errors[2] == "JSON nested too deeply"
    assert "segment" in errors[3] and "must be text" in errors[3]
    assert "facts is nested more than 10 levels deep" in errors[4]
    assert "longer than" in errors[5]
    assert len(str(caught.value)) < 2000
    assert await _count(migrated_db, Customer) == 0


async def test_text_a_database_would_choke_on_is_a_bad_row(migrated_db, tmp_path):
    path = tmp_path / "text.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [  # ASCII JSON: the surrogate as its escape
        {"kind": "customer", "id": "C-1", "name": "Анна\u0000"},  # line 1: NUL (PostgreSQL refuses it)
        {"kind": "customer", "id": "C-2", "name": "Олег\ud800"},  # line 2: a lone surrogate
        {"kind": "customer", "id": "C-3", "name": "Ира", "language": "r" * 70_000},  # line 3
        {"kind": "case", "id": "K-1", "customer": "C-1", "product": "card", "title": "Карта", "status": "new",
         "facts": {"branch": "Тверская\u0007"}},  # line 4
        {"kind": "case", "id": "K-2", "customer": "C-1", "product": "card", "title": "Карта", "status": "new",
         "priority": "9" * 5000},  # line 5
    ]), encoding="utf-8")
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    errors = dict(caught.value.errors)
    assert "name contains control characters" in errors[1]
    assert "name is not valid Unicode text" in errors[2]
    assert "language is longer than 65536 characters" in errors[3]
    assert "facts contains control characters" in errors[4]
    assert "priority" in errors[5] and "is not a whole number" in errors[5]
    assert len(str(caught.value)) < 2000
    assert await _count(migrated_db, Customer) == 0


# --- the vocabulary: case statuses, languages, required fields ----------------------------


async def test_unknown_case_status_and_language_are_bad_rows(migrated_db, tmp_path):
    path = _write_jsonl(tmp_path / "words.jsonl", [
        {"kind": "customer", "id": "C-1", "name": "Анна", "language": "xx"},                        # line 1
        {"kind": "customer", "id": "C-2", "name": "Jane", "language": "EN"},                        # read as en
        {"kind": "customer", "id": "C-3", "name": "Олег", "language": "rus"},                       # line 3
        {"kind": "case", "id": "K-1", "customer": "C-2", "product": "card", "title": "Карта",
         "status": "in_progres"},                                                                  # line 4
        {"kind": "case", "id": "K-2", "customer": "C-2", "product": "card", "title": "Карта",
         "status": "on_hold"},                                                                     # line 5
        {"kind": "case", "id": "K-3", "customer": "C-2", "product": "card", "title": "Карта",
         "status": "waiting_customer"},
    ])
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, path)
    errors = dict(caught.value.errors)
    assert sorted(errors) == [1, 3, 4, 5]
    assert errors[1] == "language 'xx' is not an ISO 639-1 language code (two letters, such as ru or en)"
    assert errors[3].startswith("language 'rus' is not an ISO 639-1 language code")
    assert errors[4].startswith("status 'in_progres' is not a known case status (did you mean 'in_progress'?); "
                                "known: new, in_progress, waiting_customer,")
    assert errors[5].startswith("status 'on_hold' is not a known case status; known:")
    assert str(caught.value).count("nothing imported") == 1
    assert await _count(migrated_db, Customer) == 0

    # A status the caller knows more (the CLI adds the intent catalogue's) is accepted.
    fixed = _write_jsonl(tmp_path / "fixed.jsonl", [
        {"kind": "customer", "id": "C-2", "name": "Jane", "language": "EN"},
        {"kind": "case", "id": "K-2", "customer": "C-2", "product": "card", "title": "Карта", "status": "on_hold"},
    ])
    await import_file(migrated_db, fixed, statuses=(*CASE_STATUSES, "on_hold"))
    async with migrated_db.session() as session:
        assert (await session.scalar(select(Customer.language).where(Customer.external_id == "C-2"))) == "en"
        assert (await session.scalar(select(Case.status).where(Case.external_id == "K-2"))) == "on_hold"


def test_the_case_statuses_cover_what_the_server_gives_meaning_to():
    from caller_id.catalogue import load_catalogue
    from caller_id.lookup import CLOSED_STATUSES
    from caller_id.seed import _STATUSES as SEEDED

    assert set(CLOSED_STATUSES) <= set(CASE_STATUSES)
    assert {status for status, _ in SEEDED} <= set(CASE_STATUSES)  # the demo data imports as it is
    catalogue = load_catalogue(PROJECT / "config" / "intents.yaml")
    named = set().union(*(spec.cases.statuses for spec in catalogue.intents if spec.cases and spec.cases.statuses))
    assert named and named <= set(CASE_STATUSES)  # the shipped catalogue needs no addition


def test_the_languages_are_the_iso_639_1_codes():  # ISO_639: Debian's iso-codes (make test installs it)
    codes = {entry["alpha_2"] for entry in json.loads(ISO_639.read_text(encoding="utf-8"))["639-2"]
             if "alpha_2" in entry}
    assert LANGUAGES == codes
    assert {"ru", "en", "de", "kk", "uk"} <= LANGUAGES


# One valid record of each kind; each required field is dropped in turn.
VALID = {
    "agent": {"kind": "agent", "interface": "PJSIP/1001", "name": "Анна"},
    "organisation": {"kind": "organisation", "inn": COMPANY_INN, "name": "ООО «Ромашка»"},
    "customer": {"kind": "customer", "id": "C-1", "name": "Иван"},
    "number": {"kind": "number", "number": "+79161234567", "customer": "C-1"},
    "case": {"kind": "case", "id": "K-1", "customer": "C-1", "product": "card", "title": "Карта", "status": "new"},
}


@pytest.mark.parametrize("kind", VALID)
async def test_the_required_fields_the_help_names_are_the_ones_checked(migrated_db, tmp_path, kind):
    required = [name.rstrip("*") for name in re.search(rf"^  {kind} +(.+(?:\n {{4,}}\S.*)*)", FORMAT_HELP,
                                                       re.MULTILINE).group(1).replace("\n", " ").split(", ")
                if name.endswith("*")]
    assert set(required) == {name for name in VALID[kind] if name != "kind"}
    records = [dict(VALID["customer"])] + [{k: v for k, v in VALID[kind].items() if k != name} for name in required]
    with pytest.raises(ImportRowsError) as caught:
        await import_file(migrated_db, _write_jsonl(tmp_path / "missing.jsonl", records))
    errors = dict(caught.value.errors)
    for line, name in enumerate(required, start=2):
        assert f"{name} is missing" in errors[line], (name, errors)
