"""`ivr model`: train the learned prediction on the confirmed calls, and evaluate it.

``ivr model train`` reads the call records whose real reason was confirmed
(with the features the prediction stored on each), fits the model on the
calls before the held-out period and evaluates it on that period against the
catalogue's rules and the "newest open case" guess (`caller_id.learning`);
the model file (``prediction.model_file``) keeps the evaluation, and the
server ranks with the model only when it beat the rules there.
``ivr model evaluate`` scores the saved model again, on its held-out period
or any other, and says whether the server will use it.

Dates are days of the contact center's time zone (``timezone``), both ends
included.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any
from zoneinfo import ZoneInfo

from ivr.cli import day, positive
from ivr.config import Config


def add_commands(sub: Any) -> None:
    """Add this group's sub-parsers to the `ivr` parser's `sub`."""
    model = sub.add_parser("model", help="train and evaluate the learned prediction of why callers call")
    model_sub = model.add_subparsers(title="model commands", metavar="ACTION")
    train = model_sub.add_parser(
        "train", help="fit the model on the confirmed calls and evaluate it on the latest ones",
        description="Fit the learned prediction on the calls whose real reason was confirmed, before the "
        "held-out period, and evaluate it on that period against the catalogue's rules and the newest open "
        "case. The model file keeps the evaluation; the server uses the model only when it beat the rules.")
    train.add_argument("--until", type=day, metavar="YYYY-MM-DD",
                       help="use calls up to this day (default: up to the newest call)")
    train.add_argument("--holdout-days", type=positive, default=14.0, metavar="N",
                       help="the last N days before --until are held out for the evaluation (default 14)")
    train.set_defaults(handler=_train)
    evaluate = model_sub.add_parser(
        "evaluate", help="score the saved model and both baselines on a period",
        description="Score the saved model, the catalogue's rules and the newest open case on the confirmed "
        "calls of a period (default: the model's held-out period), and say whether the server will use the model.")
    evaluate.add_argument("--from", dest="since", type=day, metavar="YYYY-MM-DD", help="first day")
    evaluate.add_argument("--to", dest="to", type=day, metavar="YYYY-MM-DD", help="last day")
    evaluate.add_argument("--json", action="store_true", help="one JSON object")
    evaluate.set_defaults(handler=_evaluate)


def _start_of(day: dt.date, config: Config) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZoneInfo(config.timezone))


def _train(args: argparse.Namespace, config: Config) -> int:
    from caller_id import learning
    from caller_id.catalogue import load_catalogue
    from ivr.cli import _database

    catalogue = load_catalogue(config.intents_file)
    until = _start_of(args.until + dt.timedelta(days=1), config) if args.until else None

    async def go() -> list[Any]:
        async with _database(config) as db:
            return await learning.load_examples(db, config.timezone, until=until)

    examples = asyncio.run(go())
    try:
        model = learning.train(examples, catalogue, until=until, holdout_days=args.holdout_days)
    except learning.TrainingError as exc:
        print(f"ivr model train: {exc}", file=sys.stderr)
        return 1
    learning.save(model, config.prediction.model_file)
    trained = model.trained
    print(f"trained on {trained['calls']} confirmed calls from {trained['since'][:10]} to "
          f"{trained['until'][:10]} in {trained['seconds']} s; written {config.prediction.model_file}")
    print(_table(model.evaluation))
    print(learning.choose_ranker(config.prediction.model_file, catalogue,
                                 enabled=config.prediction.enabled).note)
    return 0


def _evaluate(args: argparse.Namespace, config: Config) -> int:
    from caller_id import learning
    from caller_id.catalogue import load_catalogue
    from ivr.cli import _database

    path = config.prediction.model_file
    if not path.exists():
        print(f"ivr model evaluate: no model file {path}; `ivr model train` makes one", file=sys.stderr)
        return 1
    try:
        model = learning.load(path)
    except Exception as exc:  # noqa: BLE001 - a broken or foreign file
        print(f"ivr model evaluate: {path} cannot be read: {exc}", file=sys.stderr)
        return 1
    catalogue = load_catalogue(config.intents_file)
    misfit = model.fits(catalogue)
    if misfit is not None:
        print(f"ivr model evaluate: the model does not fit the catalogue: {misfit}; train it again",
              file=sys.stderr)
        return 1
    saved = model.evaluation
    since = _start_of(args.since, config) if args.since else (saved.since if saved else None)
    until = _start_of(args.to + dt.timedelta(days=1), config) if args.to else (saved.until if saved else None)
    if since is None or until is None or since >= until:
        print("ivr model evaluate: give the period with --from and --to (the first before the last)",
              file=sys.stderr)
        return 2

    async def go() -> list[Any]:
        async with _database(config) as db:
            return await learning.load_examples(db, config.timezone, since=since, until=until)

    examples = asyncio.run(go())
    try:
        evaluation = learning.evaluate(model, examples, catalogue, since=since, until=until)
    except learning.TrainingError as exc:
        print(f"ivr model evaluate: {exc}", file=sys.stderr)
        return 1
    choice = learning.choose_ranker(path, catalogue, enabled=config.prediction.enabled)
    if args.json:
        print(json.dumps({**evaluation.to_dict(), "server_uses_model": choice.ranker is not None,
                          "server": choice.note}, ensure_ascii=False, indent=2))
    else:
        print(_table(evaluation))
        print(choice.note)
    return 0


def _table(evaluation: Any) -> str:
    """The three rankings side by side on one period."""
    last_day = evaluation.until - dt.timedelta(microseconds=1)
    out = [f"held-out calls from {evaluation.since:%Y-%m-%d %H:%M} to {last_day:%Y-%m-%d %H:%M}: "
           f"{evaluation.model.calls} confirmed",
           f"  {'':18}{'top-1':>8}{'top-3':>8}{'Brier':>8}{'ECE':>8}"]
    for label, scores in (("learned model", evaluation.model), ("catalogue rules", evaluation.rules),
                          ("newest open case", evaluation.newest_case)):
        brier = "-" if scores.brier is None else f"{scores.brier:.3f}"
        ece = "-" if scores.ece is None else f"{scores.ece:.3f}"
        out.append(f"  {label:18}{scores.top1:8.3f}{scores.top3:8.3f}{brier:>8}{ece:>8}")
    out.append("  (Brier, ECE: calibration of the score shown for the top guess; lower is better)")
    return "\n".join(out)
