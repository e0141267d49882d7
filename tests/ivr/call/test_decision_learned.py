"""The server ranks with a learned model only when it beat the rules and fits the catalogue."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from caller_id import learning
from caller_id.catalogue import load_catalogue
from caller_id.seed import SHOWCASE
from caller_id.seed_history import seed_history
from caller_id.store import Database
from ivr.call.decision import decide
from ivr.sim.fastagi_caller import CallScript, place_call
from tests.caller_id.test_learning import relabelled_at_random

SHIPPED = Path(__file__).resolve().parents[3] / "config" / "intents.yaml"
ZONE = "Europe/Moscow"
HOLDOUT_DAYS = 14.0
# An intent the shipped catalogue does not have: a model trained without it does not fit.
EXTRA_INTENT = """
  - name: loan_restructuring
    title: {ru: Реструктуризация, en: Loan restructuring}
    cases:
      products: [loan]
      statuses: [overdue]
"""


@pytest.fixture(scope="module")
def examples(seeded_sqlite_file, tmp_path_factory) -> list[learning.Example]:
    """The confirmed calls of a history over a copy of the call-path tests' CRM."""
    path = tmp_path_factory.mktemp("learned") / "crm.sqlite3"
    shutil.copy(seeded_sqlite_file, path)

    async def go() -> list[learning.Example]:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await seed_history(db, load_catalogue(SHIPPED), 6000, seed=9, zone=ZONE)
            return await learning.load_examples(db, ZONE)
        finally:
            await db.dispose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def good_model(examples, tmp_path_factory) -> Path:
    model = learning.train(examples, load_catalogue(SHIPPED), holdout_days=HOLDOUT_DAYS)
    assert model.usable
    path = tmp_path_factory.mktemp("models") / "good.joblib"
    learning.save(model, path)
    return path


def with_model(config, path: Path):
    return replace(config, prediction=replace(config.prediction, model_file=path))


async def test_a_model_that_beat_the_rules_reorders_the_intents_of_a_call_and_keeps_their_reasons(
        base_config, start_server, good_model):
    services = (await start_server(with_model(base_config, good_model))).services
    evaluation = learning.load(good_model).evaluation
    assert services.ranker is not None
    assert (f"prediction: learned model (held-out top-1 {evaluation.model.top1:.2f} "
            f"vs rules {evaluation.rules.top1:.2f})") in services.notes
    line = services.config.line_for("general")
    changed = 0
    for entry in SHOWCASE:
        lookup = await services.directory.lookup(entry["number"], region=services.config.region)
        now = services.now()
        rules = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current, now=now)
        learned = decide(lookup, line, catalogue=services.catalogue, rules=services.rules.current, now=now,
                         ranker=services.ranker)
        by_rules = {intent.intent: intent for intent in rules.intents}
        assert sorted(by_rules) == sorted(intent.intent for intent in learned.intents)
        for intent in learned.intents:
            assert intent.reasons == by_rules[intent.intent].reasons  # the catalogue's sentences
            assert intent.case_id == by_rules[intent.intent].case_id
            assert intent.signals["rules"] == by_rules[intent.intent].score  # what the record keeps
        scores = [intent.score for intent in learned.intents]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=0.01)
        assert learned.intent == learned.intents[0].intent  # routing follows the model's first guess
        if learned.intent != rules.intent:
            reordered = (entry["number"], learned.intent)
        changed += [i.intent for i in learned.intents] != [i.intent for i in rules.intents]
    assert changed >= 3, "the model ordered no showcase caller differently from the rules"
    # A real call over FastAGI is routed on the model's first guess, not the rules' one.
    number, intent = reordered
    server = await start_server(with_model(base_config, good_model))
    result = await place_call("127.0.0.1", server.port, CallScript(number=number, line="general"), fast=True)
    assert result.error is None and result.variables["IVR_INTENT"] == intent
    assert services.ranker.failures == 0 and server.services.ranker.failures == 0


async def test_a_model_that_did_not_beat_the_rules_is_not_used_and_the_notes_say_so(
        base_config, start_server, examples, tmp_path):
    catalogue = load_catalogue(SHIPPED)
    model = learning.train(relabelled_at_random(examples, 1, HOLDOUT_DAYS), catalogue, holdout_days=HOLDOUT_DAYS)
    path = tmp_path / "bad.joblib"
    learning.save(model, path)
    services = (await start_server(with_model(base_config, path))).services
    assert services.ranker is None
    assert (f"prediction: catalogue rules (the model did not beat them: held-out top-1 "
            f"{model.evaluation.model.top1:.2f} vs rules {model.evaluation.rules.top1:.2f})") in services.notes


async def test_a_model_made_for_another_catalogue_or_no_model_leaves_the_rules(
        base_config, start_server, good_model, tmp_path):
    extended = tmp_path / "intents.yaml"
    extended.write_text(SHIPPED.read_text(encoding="utf-8") + EXTRA_INTENT, encoding="utf-8")
    config = replace(with_model(base_config, good_model), intents_file=extended)
    services = (await start_server(config)).services
    assert services.ranker is None
    assert ("prediction: catalogue rules (the model does not fit the catalogue: the catalogue's intents "
            "differ: loan_restructuring)") in services.notes
    missing = tmp_path / "none.joblib"
    services = (await start_server(with_model(base_config, missing))).services
    assert services.ranker is None
    assert f"prediction: catalogue rules (no model file {missing}; `ivr model train` makes one)" in services.notes
