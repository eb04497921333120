"""Few-shot transfer: adapt a fitted predictor to a new device from a handful of whole-model measurements.

The source predictor's per-op costs are kept; one more calibration layer (:data:`latency.calibration.FEW_SHOT`:
``alpha(ctx) = a0 + a1 log batch + a2 log seq_len``, one per-op ``beta`` shared by all kinds and a per-model
``gamma``, per space, shrunk towards the identity with a cross-validated ridge)
is fitted on at most ``shots`` rows of the new profile's ``calibration`` split (spaces take turns, Contexts spread
in a seeded order). The new profile needs no op table.
"""
from __future__ import annotations

import random
from collections import defaultdict

from latency.calibration import FEW_SHOT
from latency.predictor import OpPredictor, Predictor, e2e_rows, predictor_from_dict
from latency.profile_data import PredictorError, ProfileData, data_hash, profile_hash


def pick_shots(rows: list, shots: int, seed: int = 0) -> list:
    """At most ``shots`` rows: spaces take turns; within a space, Contexts in a seeded order (so a few shots
    spread over the grid), then another architecture at each Context."""
    rng = random.Random(seed)
    per_space: dict[str, list[list]] = {}
    for space in sorted({r.space for r in rows}):
        groups: dict = defaultdict(list)
        for r in rows:
            if r.space == space:
                groups[r.ctx].append(r)
        ctxs = sorted(groups)
        rng.shuffle(ctxs)
        for c in ctxs:
            rng.shuffle(groups[c])
        per_space[space] = [groups[c] for c in ctxs]
    out: list = []
    cursor = {s: 0 for s in per_space}
    while len(out) < shots and any(any(g) for g in per_space.values()):
        for space, groups in per_space.items():
            if len(out) >= shots or not any(groups):
                continue
            while not groups[cursor[space] % len(groups)]:
                cursor[space] += 1
            out.append(groups[cursor[space] % len(groups)].pop())
            cursor[space] += 1
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
                 "seed": seed, "data_hash": data_hash(new.path)}
    pred.profile = profile_hash(new.meta)
    return pred
