"""Few-shot transfer: adapt a fitted predictor to a new device from a handful of whole-model measurements.

The source predictor's per-op costs are kept; one more calibration layer (:data:`latency.calibration.FEW_SHOT`:
``alpha(ctx) = a0 + a1 log tokens`` and a per-model ``gamma``, per space, strongly shrunk towards the identity)
is fitted on at most ``shots`` rows of the new profile's ``calibration`` split, chosen round-robin over
(space, Context) with the seed. The new profile needs no op table.
"""
from __future__ import annotations

import random
from collections import defaultdict

from latency.calibration import FEW_SHOT
from latency.predictor import OpPredictor, Predictor, e2e_rows, predictor_from_dict
from latency.profile_data import PredictorError, ProfileData, profile_hash


def pick_shots(rows: list, shots: int, seed: int = 0) -> list:
    """At most ``shots`` rows, round-robin over (space, Context) groups, each group in a seeded order."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r.space, r.ctx)].append(r)
    rng = random.Random(seed)
    order = sorted(groups)
    for k in order:
        rng.shuffle(groups[k])
    out: list = []
    while len(out) < shots and any(groups[k] for k in order):
        for k in order:
            if groups[k] and len(out) < shots:
                out.append(groups[k].pop())
    return out


def transfer(source: Predictor, new: ProfileData, shots: int = 20, seed: int = 0) -> Predictor:
    """A copy of ``source`` with a few-shot layer fitted on ``new``'s calibration rows.

    Args:
        source: a fitted predictor of another device (its spaces must cover the new profile's rows).
        new: the new device's profile folder (``profile.json`` + ``e2e.csv``; ``ops.csv`` not needed).
        shots: most whole-model measurements to use.
        seed: picks which rows.
    Returns:
        The adapted predictor, tagged ``<source kind>+transfer`` and bound to the new profile.
    """
    if shots < 1:
        raise PredictorError(f"--shots must be at least 1, got {shots}")
    if not isinstance(source, OpPredictor):
        raise PredictorError("few-shot transfer needs a per-op predictor as the source")
    pred = predictor_from_dict(source.to_dict())
    assert isinstance(pred, OpPredictor)
    new_spaces = {s["name"] for s in new.spaces()}
    missing = new_spaces - {s["name"] for s in pred.spaces}
    if missing:
        raise PredictorError(f"the source predictor does not cover space(s) {sorted(missing)} of {new.path}; "
                             f"transfer from a profile that covers them")
    rows = e2e_rows(pred, new, "calibration")
    chosen = pick_shots(rows, shots, seed)
    spaces_chosen = {r.space for r in chosen}
    if spaces_chosen != new_spaces & {r.space for r in rows} or not chosen:
        raise PredictorError(f"{shots} shots do not reach every space of {new.path}; raise --shots")
    pred.add_layer(chosen, FEW_SHOT, role="transfer")
    pred.kind = f"{source.kind}+transfer"
    pred.spaces = [s for s in pred.spaces if s["name"] in spaces_chosen]
    pred.meta = {**pred.meta, "source_profile": source.meta.get("profile_name"), "source_hash": source.profile,
                 "profile_name": new.name, "backend": new.meta.get("backend", {}), "shots": len(chosen),
                 "seed": seed}
    pred.profile = profile_hash(new.meta)
    return pred
