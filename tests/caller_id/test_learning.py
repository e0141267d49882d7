"""The learned prediction: trained on the seeded history's earlier calls, scored on its later ones."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import time
from pathlib import Path

import pytest

from caller_id import learning
from caller_id.catalogue import load_catalogue, parse_catalogue
from caller_id.seed import seed
from caller_id.seed_history import seed_history
from caller_id.store import Database

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "intents.yaml"
ZONE = "Europe/Moscow"
CUSTOMERS, CALLS, HOLDOUT_DAYS = 600, 12_000, 14.0


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(SHIPPED)


@pytest.fixture(scope="module")
def examples(tmp_path_factory, catalogue) -> list[learning.Example]:
    """The confirmed calls of a seeded history (600 customers, 12,000 calls over 60 days)."""
    path = tmp_path_factory.mktemp("history") / "crm.sqlite3"

    async def go() -> list[learning.Example]:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
            await seed(db, CUSTOMERS, seed=5)
            await seed_history(db, catalogue, CALLS, seed=5, zone=ZONE)
            return await learning.load_examples(db, ZONE)
        finally:
            await db.dispose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def model(examples, catalogue) -> learning.IntentModel:
    return learning.train(examples, catalogue, holdout_days=HOLDOUT_DAYS)


def test_the_learned_model_beats_both_baselines_on_the_later_period_it_never_saw(model, examples):
    evaluation = model.evaluation
    newest = max(example.at for example in examples)
    assert evaluation.until > newest and evaluation.until - evaluation.since == dt.timedelta(days=HOLDOUT_DAYS)
    assert dt.datetime.fromisoformat(model.trained["until"]) == evaluation.since  # trained only before it
    assert model.trained["calls"] < len(examples) and evaluation.model.calls > 1000
    model_scores, rules, newest_case = evaluation.model, evaluation.rules, evaluation.newest_case
    # The process weighs what the rules weigh otherwise (see caller_id.seed_history): top-1 by 5 points.
    assert model_scores.top1 >= rules.top1 + 0.05, evaluation.to_dict()
    assert model_scores.top1 >= newest_case.top1 + 0.05, evaluation.to_dict()
    # Top-3 by one point: most calls have three guesses or fewer, where every ranking has them all.
    assert model_scores.top3 >= rules.top3 + 0.01, evaluation.to_dict()
    assert model_scores.top3 >= newest_case.top3 + 0.01, evaluation.to_dict()
    # Its probabilities mean what they say; the rules' scores were never meant as probabilities.
    assert model_scores.ece <= 0.07 and model_scores.ece < rules.ece / 2
    assert model_scores.brier < rules.brier
    assert newest_case.brier is None and newest_case.ece is None
    assert model.usable and evaluation.beats_rules


def test_calibration_is_the_brier_score_and_the_expected_calibration_error_over_ten_bins():
    confidence = [0.95, 0.85, 0.85, 0.15, 0.55, 0.55, 1.0]
    right = [True, True, False, False, True, False, True]
    brier, ece, table = learning.calibration(confidence, right)
    # By hand: squared misses .0025 .0225 .7225 .0225 .2025 .3025 0 -> 1.275 / 7.
    assert brier == pytest.approx(1.275 / 7, abs=1e-4)
    # Bins: 0.1-0.2 one call (0.15, 0 right), 0.5-0.6 two (0.55, half), 0.8-0.9 two (0.85, half),
    # 0.9-1.0 two (0.975 on average, both right; a score of 1 falls in the last bin).
    assert table == ((1, 0.15, 0.0), (2, 0.55, 0.5), (2, 0.85, 0.5), (2, 0.975, 1.0))
    assert ece == pytest.approx((0.15 + 2 * 0.05 + 2 * 0.35 + 2 * 0.025) / 7, abs=1e-4)
    assert learning.calibration([0.7] * 10, [True] * 7 + [False] * 3)[1] == pytest.approx(0.0)


def test_top_one_and_top_three_count_the_real_reason_among_the_first_guesses():
    scores = learning.score_rankings("x", [["a", "b", "c", "d"], ["b", "a"], ["d", "c", "b", "a"], []],
                                     ["a", "a", "a", "a"])
    assert (scores.top1, scores.top3, scores.calls) == (0.25, 0.5, 4)


def test_the_model_file_keeps_the_model_its_catalogue_period_and_evaluation(model, catalogue, tmp_path):
    path = tmp_path / "model.joblib"
    learning.save(model, path)
    loaded = learning.load(path)
    assert loaded.intents == catalogue.names and loaded.layout == learning.FEATURE_LAYOUT
    assert loaded.columns == learning.Vectoriser(catalogue).columns
    assert loaded.evaluation == model.evaluation and loaded.trained == model.trained and loaded.usable
    assert loaded.temperature == model.temperature
    choice = learning.choose_ranker(path, catalogue)
    assert choice.ranker is not None
    assert choice.note == (f"prediction: learned model (held-out top-1 {model.evaluation.model.top1:.2f} "
                           f"vs rules {model.evaluation.rules.top1:.2f})")


def relabelled_at_random(examples: list, seed: int, holdout_days: float = HOLDOUT_DAYS) -> list:
    """The history with the reasons before the held-out period drawn at random among each call's guesses:
    a model trained on it learns nothing the rules do not know."""
    _, _, since, _ = learning.split_period(examples, until=None, holdout_days=holdout_days)
    rng = random.Random(seed)
    return [example if example.at >= since
            else dataclasses.replace(example, actual=rng.choice(example.features.intents)[0])
            for example in examples]


def test_a_model_that_does_not_beat_the_rules_is_saved_marked_and_not_used(examples, catalogue, tmp_path):
    model = learning.train(relabelled_at_random(examples, 3), catalogue, holdout_days=HOLDOUT_DAYS)
    assert not model.evaluation.beats_rules and not model.usable
    path = tmp_path / "model.joblib"
    learning.save(model, path)
    assert not learning.load(path).usable
    choice = learning.choose_ranker(path, catalogue)
    assert choice.ranker is None
    assert choice.note.startswith("prediction: catalogue rules (the model did not beat them: held-out top-1 ")


def test_a_missing_foreign_or_mismatched_model_file_leaves_the_rules(model, catalogue, tmp_path):
    path = tmp_path / "model.joblib"
    assert learning.choose_ranker(path, catalogue).note == (
        f"prediction: catalogue rules (no model file {path}; `ivr model train` makes one)")
    learning.save(model, path)
    assert learning.choose_ranker(path, catalogue, enabled=False).ranker is None
    renamed = parse_catalogue(SHIPPED.read_text(encoding="utf-8").replace("name: product_offer",
                                                                          "name: product_interest"), "renamed")
    choice = learning.choose_ranker(path, renamed)
    assert choice.ranker is None and choice.note == ("prediction: catalogue rules (the model does not fit the "
                                                     "catalogue: the catalogue's intents differ: product_interest, "
                                                     "product_offer)")
    reweighed = parse_catalogue(SHIPPED.read_text(encoding="utf-8").replace("  repeat_call: 0.2 ",
                                                                            "  repeat_call: 0.3 ", 1), "reweighed")
    choice = learning.choose_ranker(path, reweighed)  # the same intents and lines, other weights
    assert choice.ranker is None and "weights, matches or settings changed" in choice.note
    path.write_bytes(b"not a model")
    assert "cannot be read" in learning.choose_ranker(path, catalogue).note


def test_the_live_ranker_orders_a_call_by_probability_in_well_under_a_millisecond(model, examples, catalogue):
    ranker = learning.LiveRanker(model, catalogue)
    calls = [example for example in examples if len(example.features.intents) >= 3][:300]
    from caller_id.predict import Intent

    started = time.perf_counter()
    for example in calls:
        intents = [Intent(name, signals.get("rules", 0.0), (f"reason of {name}",), None, signals)
                   for name, signals in example.features.intents]
        ranked = ranker.rerank(intents, example.features, line=example.line, segment=example.segment,
                               now=example.at)
        assert sorted(i.intent for i in ranked) == sorted(i.intent for i in intents)
        assert [i.score for i in ranked] == sorted((i.score for i in ranked), reverse=True)
        assert sum(i.score for i in ranked) == pytest.approx(1.0, abs=0.01)
        assert all(i.reasons == (f"reason of {i.intent}",) for i in ranked)
    per_call = (time.perf_counter() - started) / len(calls)
    assert per_call < 0.005, f"{per_call * 1000:.3f} ms per call"  # tens of µs alone (benchmarks/training.py)
    assert ranker.failures == 0


def test_a_ranker_that_fails_on_a_call_keeps_the_rules_order_and_counts_it(model, catalogue):
    from caller_id.predict import Intent

    ranker = learning.LiveRanker(model, catalogue)
    intents = [Intent("card_ready", 0.5, ("a",), 1, {"rules": 0.5}),
               Intent("general_question", 0.2, ("b",), None, {"rules": "broken"})]
    features = learning.CallFeatures.of(intents, known=True, vip=False, role="private", open_cases=1,
                                        recent_calls=0)
    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)
    assert ranker.rerank(intents, features, line="general", segment="C", now=now) == tuple(intents)
    assert ranker.failures == 1
