"""Measure a search's pick before training it: the architecture chosen under a latency budget is timed on this
machine the profile's way, and where it lands outside the kept window it is picked again with the predictor's
reading on it divided out.

The predictor reads a model to a few percent on average, but the architectures a budgeted search returns are the
ones it knows least (homogeneous cells of one op, the space's corners), and a machine's speed drifts between the
profile's day and the search's (``benchmarks/README.md``: the Zen 5 VM read 5-19 % away from its profiles on other
days). Timing the pick costs seconds (an untrained model times like a trained one) against the minutes of training
that follow; so a run can check it first (``--verify N``; off by default: on the development VM, whose speed moves
by several percent within minutes, the loop chased that drift as often as it corrected the predictor,
``benchmarks/README.md``, 2026-12-06):

1. ``pick(1.0)``: the search's choice as the predictor reads it; measure it;
2. kept if ``ACCEPT[0] x budget <= measured <= ACCEPT[1] x budget``;
3. else ``r = measured / predicted`` (how this machine reads that pick against the predictor) and ``pick(r)``: the
   same choice with every prediction multiplied by ``r`` (aimed at ``budget / r`` in the predictor's terms); measure
   it; and so on, at most ``tries`` measurements;
4. none kept: the measured pick closest under ``ACCEPT[1] x budget`` (the fastest where every pick was over), and
   the record says so.

Each pick is timed in the same shuffled rounds as :data:`REFERENCES` of the profile's own whole models (since
2026-12-06; :func:`profile_measurer`), and its time is taken at the speed the predictor carries: measured / (the
references' now / profile) x the predictor's recheck factor. The loop then corrects the predictor's reading of the
pick, not the machine's drift in those minutes, which before made it re-pick models that were within the window
(``benchmarks/README.md``, ``--verify-both``, 2026-12-06 07:28 UTC). The record keeps each pick's raw time and the
machine's speed (``raw_ms``, ``machine_speed``).

A pick that repeats an architecture already measured ends the loop (the choice cannot move further). Only on the
profile's own device (:func:`nas.adabert.measure.same_device`): elsewhere a measurement says nothing about the
budget, and the predictor's pick stands.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACCEPT = (0.935, 1.0)  # measured / budget at which a pick is kept: at or under the budget and no lower than the
# engines aim (their window's lower edge): a pick kept at 0.91 x budget leaves no room for the machine to run a few
# percent faster before the model is used (benchmarks/README.md: budget fidelity with --verify, 2026-12-06)
TRIES = 3  # measurements at most (one per pick)
REFERENCES = 6  # the profile's own whole models timed beside each pick (its machine-speed reference; 0: none)


@dataclass
class Landing:
    """What :func:`land` kept, and every pick it measured on the way."""

    arch: Any
    predicted_ms: float  # the predictor's reading of the kept pick (no correction)
    measured_ms: float
    landed: bool  # within ACCEPT x budget
    tries: list[dict] = field(default_factory=list)  # per pick: scale, predicted_ms, measured_ms, share, kept

    def to_dict(self, budget_ms: float) -> dict:
        return {"budget_ms": budget_ms, "accept": list(ACCEPT), "landed": self.landed,
                "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
                "share": self.measured_ms / budget_ms, "tries": self.tries, "note": self.note(budget_ms)}

    def note(self, budget_ms: float) -> str:
        n = len(self.tries)
        where = f"{self.measured_ms:.3f} ms = {self.measured_ms / budget_ms:.3f} x the {budget_ms:.3f} ms budget"
        kept = [t for t in self.tries if t.get("kept")]
        if kept and "machine_speed" in kept[-1]:
            where += (f" at the predictor's speed (raw {kept[-1]['raw_ms']:.3f} ms; the machine ran "
                      f"{kept[-1]['machine_speed']:.3f} x its profile, by {kept[-1]['references']} of the profile's models)")
        if self.landed:
            return f"pick timed here: {where}" + (f" (pick {n}: the predictor read the earlier off)" if n > 1 else "")
        kept = "the closest under it" if self.measured_ms <= ACCEPT[1] * budget_ms else "the fastest (none was under)"
        tries = f"{n} tr{'y' if n == 1 else 'ies'}"
        return f"no pick timed here within [{ACCEPT[0]:.3f}, {ACCEPT[1]:.3f}] x budget in {tries}; kept {kept}: {where}"


def land(pick: Callable[[float], tuple[Any, float]], measure: Callable[[Any], float], budget_ms: float,
         tries: int = TRIES, key: Callable[[Any], str] = str) -> Landing:
    """Pick, measure, pick again with the predictor's error divided out, until a measurement lands.

    Args:
        pick: ``scale -> (architecture, predicted_ms)``: the search's choice when every prediction is multiplied by
            ``scale`` (``predicted_ms`` without it).
        measure: ``architecture -> measured ms`` on this machine, the profile's way, or ``-> (ms, details)``
            (details go into that pick's log entry: :func:`profile_measurer` with references).
        budget_ms: the latency budget.
        tries: measurements at most (at least 1).
        key: an architecture's identity (to notice a pick that repeats).
    """
    if tries < 1:
        raise ValueError(f"tries must be at least 1, got {tries}")
    if not budget_ms > 0:
        raise ValueError(f"budget_ms must be positive, got {budget_ms}")
    lo, hi = ACCEPT[0] * budget_ms, ACCEPT[1] * budget_ms
    seen: dict[str, tuple[Any, float, float]] = {}
    log: list[dict] = []
    scale = 1.0
    for _ in range(tries):
        arch, predicted = pick(scale)
        k = key(arch)
        if k in seen:  # the choice does not move: nothing more to learn from measuring
            break
        got = measure(arch)
        measured, extra = (float(got[0]), dict(got[1])) if isinstance(got, tuple) else (float(got), {})
        seen[k] = (arch, float(predicted), measured)
        log.append({"scale": round(scale, 6), "predicted_ms": float(predicted), "measured_ms": measured,
                    "share": measured / budget_ms, "kept": False, **extra})
        if lo <= measured <= hi:
            log[-1]["kept"] = True
            return Landing(arch, float(predicted), measured, True, log)
        scale = measured / float(predicted)
    under = [v for v in seen.values() if v[2] <= hi]
    arch, predicted, measured = max(under, key=lambda v: v[2]) if under else min(seen.values(), key=lambda v: v[2])
    for t in log:
        t["kept"] = t["measured_ms"] == measured and t["predicted_ms"] == predicted
    return Landing(arch, predicted, measured, False, log)


def profile_measurer(prof, ctx, num_labels: int = 2, references: int | None = None, speed: float | None = None
                     ) -> tuple[Callable[[Any], Any] | None, str | None]:
    """``(measure, None)`` with the profile's backend, threads and protocol, or ``(None, why)`` where this machine
    is not the profile's device.

    With ``references`` (default :data:`REFERENCES`) of the profile's own whole-model rows of the architecture's
    space (:func:`latency.measure.reference_rows`, at ``ctx`` first), each pick is timed in the same shuffled rounds
    as they are (:func:`latency.measure.measure_with_references`), and ``measure`` returns ``(ms, details)``: the
    pick's time at the speed the predictor carries (``speed``: its recheck factor; default that of the profile's
    ``predictor.json``, 1 without one), i.e. measured / (references' now / profile) x speed, so that the loop
    corrects the predictor's reading of the pick and not the machine's drift in those minutes; ``details`` keeps
    ``raw_ms``, ``machine_speed`` and ``references``. With ``references=0``: one
    :func:`latency.measure.measure_arch` call per pick; where the profile has no whole models of the pick's space:
    the time as measured."""
    from latency.backends.base import get_backend
    from latency.measure import measure_arch, measure_with_references, reference_rows
    from latency.stats import Protocol
    from nas.adabert.measure import same_device

    meta = prof.meta.get("backend", {})
    name, device, threads = meta.get("name", "onnxruntime"), meta.get("device", "cpu"), int(meta.get("threads", 1))
    try:
        with get_backend(name, threads=threads, device=device) as be:
            diffs = same_device(prof, be)
    except Exception as e:  # noqa: BLE001 - a backend this machine cannot open: nothing to measure with
        return None, f"this machine cannot run the profile's backend ({e})"
    if diffs:
        return None, f"not the profile's device ({'; '.join(diffs[:3])}): the predictor's pick stands unmeasured"
    protocol = Protocol.from_dict(prof.meta["protocol"])

    n_refs = REFERENCES if references is None else references
    if speed is None:
        from latency.predictor import load_predictor
        from latency.profile_data import PredictorError

        try:
            speed = load_predictor(prof.path, prof).speed
        except PredictorError:  # no usable predictor.json: the profile's own speed
            speed = 1.0
    refs: dict[str, list] = {}  # the reference rows of each space, chosen once

    def measure(arch):
        if n_refs <= 0:
            return measure_arch(arch, ctx, backend=name, device=device, threads=threads, protocol=protocol,
                                num_labels=num_labels)["latency_p50_ms"]
        if arch.space not in refs:
            refs[arch.space] = reference_rows(prof, n_refs, (ctx,), space=arch.space)
        m = measure_with_references(arch, ctx, refs[arch.space], backend=name, device=device, threads=threads,
                                    protocol=protocol, num_labels=num_labels)
        if not m["references"]:  # the profile has no whole-model rows of this space: the time as measured
            return m["latency_p50_ms"]
        return m["latency_p50_ms"] / m["speed"] * speed, {"raw_ms": m["latency_p50_ms"],
                                                           "machine_speed": round(m["speed"], 5),
                                                           "references": m["references"]}

    return measure, None


__all__ = ["ACCEPT", "REFERENCES", "TRIES", "Landing", "land", "profile_measurer"]
