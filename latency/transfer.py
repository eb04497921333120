"""Transfer to a new device: a few minutes of measurement there instead of a full profile.

``hwnas profile --transfer-from SRC --out NEW`` (:func:`transfer_config`, :func:`fit_transfer`) times every op of
SRC's spaces at the corners and the middles of SRC's Context grid (:func:`op_axis`: 3 x 3 Contexts on the default
grid), and a few whole architectures (the homogeneous ones and :data:`TRANSFER_E2E` sampled ones per space) at
:func:`e2e_contexts`, four Contexts. The new device's op table is SRC's, each op scaled by its own measured
ratio (interpolated between the Contexts measured), and a calibration layer is fitted on the new whole-model rows.
The older few-shot transfer (below) keeps SRC's op costs and fits one layer on a handful of whole-model rows only
(``hwnas fit NEW --from SRC --e2e-only``).

Few-shot transfer: adapt a fitted predictor to a new device from a handful of whole-model measurements.

The source predictor's per-op costs are kept; one more calibration layer (:data:`latency.calibration.FEW_SHOT`:
``alpha(ctx) = a0 + a1 log batch + a2 log seq_len``, one per-op ``beta`` shared by all kinds and a per-model
``gamma``, per space, shrunk towards the identity with a cross-validated ridge)
is fitted on at most ``shots`` rows of the new profile's ``calibration`` split (spaces take turns, Contexts spread
in a seeded order). The new profile needs no op table.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict

import pandas as pd

from latency.calibration import FEW_SHOT, CalibrationSpec
from latency.predictor import OpPredictor, Predictor, e2e_rows, merges_common_ops, predictor_from_dict
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
    pred.meta.pop("speed", None)  # the source machine's drift is no business of the new device's
    new_spaces = {s["name"] for s in new.spaces()}
    missing = new_spaces - {s["name"] for s in pred.spaces}
    if missing:
        raise PredictorError(f"the source predictor does not cover space(s) {sorted(missing)} of {new.path}; "
                             f"transfer from a profile that covers them")
    pred.cse = merges_common_ops(new.meta.get("backend", {}))  # the ops the new backend runs, not the source's
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
                 "seed": seed, "data_hash": data_hash(new.path), "cse": pred.cse}
    pred.profile = profile_hash(new.meta)
    return pred


# ------------------------------------------------------------------------------------ a new device in minutes
TRANSFER_E2E = 2  # sampled whole architectures per space a transfer measurement times (plus the homogeneous ones;
# 4 instead of 2 gained nothing in a replay on the AMD torch profile)
TRANSFER_SPEC = CalibrationSpec(alpha=("one", "log_batch", "log_seq_len", "log_batch_x_seq_len"), beta=("one",),
                                gamma=("one",), per_kind=True)  # smooth in the Context: whole-model rows exist at
# four Contexts only; the product term bends alpha towards the large batch x long sequence corner, where eager torch's
# AdaBERT cells ran 11-17 % above a plane fitted on small Contexts (``e2e_contexts``)
TRANSFER_SPEC_PLANE = CalibrationSpec(alpha=("one", "log_batch", "log_seq_len"), beta=("one",), gamma=("one",),
                                      per_kind=True)  # a transfer measured before the fourth Context: a plane


def corners(values: list[int]) -> tuple[int, ...]:
    """The smallest and the largest of a grid axis."""
    v = sorted(values)
    return (v[0], v[-1]) if len(v) > 1 else (v[0],)


def middle(values: list[int]) -> int:
    """The grid axis value in the middle (the upper one of two)."""
    v = sorted(values)
    return v[len(v) // 2]


def op_axis(values: list[int]) -> tuple[int, ...]:
    """Where along a grid axis a transfer measurement times the ops: its ends and its middle.

    Between the ends alone the ratio new / source does not follow a straight line in log size: on the Zen 5 host
    torch's MHA at batch 32 x seq_len 128 came out 24 % above the torch table, a convolution at batch 8 x seq_len 256
    26 % (onnxruntime -> torch). With the middles too (3 x 3 Contexts instead of 2 x 2, about 40 s more on 2
    cores), replayed on five transfer measurements, held-out whole models within +-10 % rose from 83 % / 81 % to
    88 % / 91 % (AdaBERT / NAS-BERT; ``benchmarks/README.md``).

    >>> op_axis([1, 8, 32]), op_axis([32, 64, 128, 256]), op_axis([16, 32]), op_axis([64])
    ((1, 8, 32), (32, 128, 256), (16, 32), (64,))
    """
    return tuple(sorted({*corners(values), middle(values)}))


def e2e_contexts(batch: list[int], seq_len: list[int]) -> tuple[tuple[int, int], ...]:
    """Where a transfer measurement times whole models: both seq_len ends at the smallest and at the middle batch.
    The calibration is smooth in the Context (:data:`TRANSFER_SPEC`: a plane in log batch and log seq_len bent by
    their product), so four Contexts that span both axes fix it. The first three alone (no middle batch x longest
    seq_len) predicted as well as three corners and the grid's middle in half the time (replays on five transfer
    measurements: 89 % / 90 % against 86 % / 92 % within +-10 %), but left eager torch's AdaBERT 11-17 % under its
    measurements at batch 8-32 x seq_len 256 (onnxruntime -> torch, three sittings: 79-88 % within +-10 %). Five sittings with the fourth,
    each also fitted without it: AdaBERT 75 % -> 84 % (mean; higher in every sitting), NAS-BERT 94 % -> 95 % (the
    sittings' speed divided out); it costs 25-32 s on 2 cores (17-23 s of timed runs, the rest warm-ups)
    (``benchmarks/README.md``).

    >>> e2e_contexts([1, 8, 32], [32, 64, 128, 256])
    ((1, 32), (1, 256), (8, 32), (8, 256))
    """
    b, s = sorted(batch), sorted(seq_len)
    out = [(b[0], s[0]), (b[0], s[-1]), (middle(b), s[0]), (middle(b), s[-1])]
    return tuple(dict.fromkeys(out))


def check_source(src: ProfileData, device: str) -> None:
    """Refuse a source profile a transfer cannot start from (one line each, saying what to do)."""
    from nas.spaces import get_space

    if src.meta.get("transfer_from"):
        raise PredictorError(f"{src.path} is itself a transfer profile (from {src.meta['transfer_from']['name']}); "
                             f"transfer from a full profile, e.g. --transfer-from {src.meta['transfer_from']['name']}")
    if src.ops is None or src.ops.empty:
        raise PredictorError(f"{src.path} has no op table (ops.csv); transfer from a full profile made by "
                             f"`hwnas profile`")
    for s in src.spaces():
        here = get_space(s["name"], s["preset"])
        if here.version != s["version"]:
            raise PredictorError(f"{src.path} was measured on {s['name']} space version {s['version']}, this hwnas "
                                 f"has version {here.version}: its op table cannot transfer; re-profile the source "
                                 f"with this version (`hwnas profile`) or profile the new device fully")
    src_dev = (src.meta.get("backend") or {}).get("device", "cpu")
    if src_dev != device:
        raise PredictorError(f"{src.path} is a {src_dev} profile and the new device is {device}: op costs do not "
                             f"scale alike between a {src_dev} and a {device}, so a transfer cannot work; pick a "
                             f"{device} source profile or run a full `hwnas profile` on the new device")


def transfer_config(src: ProfileData, backend: str, device: str, threads: int, e2e: int | None = None,
                    seed: int = 0, minutes: float | None = None):
    """The short measurement of a new device: every op of the source's spaces at the corners and middles of its
    grid (:func:`op_axis`), and a few whole architectures (sampled and homogeneous) at :func:`e2e_contexts`, all
    for calibration, within ``minutes`` (default :data:`TRANSFER_MINUTES`; :func:`transfer_budget_s`)."""
    from dataclasses import replace

    from latency.profiler import ProfileConfig
    from latency.stats import Protocol

    check_source(src, device)
    b, s = src.grid()
    protocol = replace(Protocol(seed=seed), visits=2, max_visits=3, time_cap_s=0.1, e2e_time_cap_s=0.4,
                       retest_fraction=0.0, retest_min=10,
                       budget_s=transfer_budget_s(TRANSFER_MINUTES if minutes is None else minutes),
                       probe="none" if device == "cuda" else Protocol.probe)
    return ProfileConfig(backend=backend, device=device, threads=threads,
                         spaces=tuple((x["name"], x["preset"]) for x in src.spaces()), batch=op_axis(b),
                         seq_len=op_axis(s), e2e=TRANSFER_E2E if e2e is None else e2e, seed=seed, protocol=protocol,
                         e2e_contexts=e2e_contexts(b, s),
                         search_like=False, homogeneous=True, homogeneous_depths=1, split="calibration",
                         transfer_from={"name": src.name, "path": str(src.path), "profile": profile_hash(src.meta),
                                        "data_hash": data_hash(src.path)})


TRANSFER_MINUTES = 3.0  # a transfer's default measuring time (``--minutes``)
TRANSFER_END_S = 10.0  # of it, kept for the visit in flight when the budget runs out and for writing the tables:
# a session budgeted 170 s ran 170.4 s (2026-12-06)
TRANSFER_MIN_MINUTES = 2.0  # the whole models' visits alone took 64-68 s on 2 cores (2026-12-06): asked for 1 minute,
# a transfer ran 1.15; asked for 1.5, it ran 1.47 but timed 76 of 603 op entries (AdaBERT 48 % within +-10 %);
# asked for 2, 1.88 minutes, 349 op entries, AdaBERT 61 % (3 minutes: all 603, 84-86 %)


def transfer_budget_s(minutes: float) -> float:
    """The measuring budget (``Protocol.budget_s``) of a transfer asked to take at most ``minutes``. Without one,
    on a noisy VM, retakes were a fifth of a transfer's visits and sittings ran 2.77-3.49 minutes; with it, op
    visits and retakes are skipped as the end nears (:func:`latency.profiler.measure_jobs`), the whole models'
    main visits never.

    >>> transfer_budget_s(3)
    170.0
    """
    if not math.isfinite(minutes) or minutes < TRANSFER_MIN_MINUTES:
        raise PredictorError(f"--minutes {minutes:g} is too short for a transfer: its whole models alone take about "
                             f"a minute on 2 cores and are always measured in full, and too few ops would be left; "
                             f"give at least {TRANSFER_MIN_MINUTES:g}")
    return round(minutes * 60 - TRANSFER_END_S, 1)


CURVE_DEG = 2  # the per-kind curve of log ratio in log source milliseconds that bends the grid interpolation


def _bilinear(values, gb: list[int], gs: list[int], batch: int, seq_len: int) -> float:
    """``values[(b, s)]`` on the measured grid ``gb`` x ``gs``, interpolated bilinearly in (log batch, log seq_len)
    at (``batch``, ``seq_len``) between its two neighbours on each axis; held at the nearest edge outside it."""
    from latency.lut import _axis_weights

    bi, bj, bt = _axis_weights(gb, batch)
    si, sj, st = _axis_weights(gs, seq_len)
    bt, st = min(max(bt, 0.0), 1.0), min(max(st, 0.0), 1.0)
    return ((1 - bt) * (1 - st) * values[(gb[bi], gs[si])] + bt * (1 - st) * values[(gb[bj], gs[si])]
            + (1 - bt) * st * values[(gb[bi], gs[sj])] + bt * st * values[(gb[bj], gs[sj])])


def scaled_ops(src: ProfileData, new: ProfileData) -> pd.DataFrame:
    """The source's op table moved to the new device: each op's source milliseconds times its own ratio
    new / source, measured at the Contexts the transfer timed (:func:`op_axis`; any rectangular part of the grid)
    and interpolated bilinearly in (log batch, log seq_len) between them (held at the nearest edge outside them).
    An op the new device lacks takes its kind's median ratio, and so does an op at a Context a measuring budget
    skipped (at that Context).

    Between the measured Contexts the log ratio is bent by its kind's curve: a quadratic in log source
    milliseconds fitted to all the kind's measured ratios (an op kind's ratio follows the op's size: torch's
    per-call overhead weighs on small ops, not on large ones), added as its departure from its own grid
    interpolation, so the measured Contexts stay exact. On the AMD tables (onnxruntime -> torch, corners only,
    ops between them) this took the median op error from 6.5 % to 4.1 %; a kind with one op has no curve."""
    import numpy as np

    key = ["op_key", "batch", "seq_len"]
    both = new.ops[key + ["latency_p50_ms"]].merge(src.ops[key + ["kind", "latency_p50_ms"]], on=key,
                                                    suffixes=("_new", "_src"))
    if both.empty:
        raise PredictorError(f"{new.path} and {src.path} share no op measurement; measure the new device with "
                             f"`hwnas profile --transfer-from {src.path}`")
    both["log_r"] = np.log(both["latency_p50_ms_new"] / both["latency_p50_ms_src"])
    both["log_ms"] = np.log(both["latency_p50_ms_src"])
    gb, gs = [int(x) for x in sorted(both["batch"].unique())], [int(x) for x in sorted(both["seq_len"].unique())]
    grid = pd.MultiIndex.from_product([gb, gs], names=["batch", "seq_len"])
    everyone = both.groupby(["batch", "seq_len"])["log_r"].median().reindex(grid)
    everyone = everyone.fillna(everyone.median())
    by_kind = {k: g.groupby(["batch", "seq_len"])["log_r"].median().reindex(grid).fillna(everyone)
               for k, g in both.groupby("kind")}
    ratio = {k: g.set_index(["batch", "seq_len"])["log_r"].reindex(grid).fillna(by_kind[g["kind"].iloc[0]])
             for k, g in both.groupby("op_key")}  # a Context a measuring budget skipped: the kind's median there
    curve = {k: np.polyfit(g["log_ms"], g["log_r"], CURVE_DEG) for k, g in both.groupby("kind")
             if g["op_key"].nunique() > 1 and len(g) > CURVE_DEG + 2}
    src_ms = {k: g.set_index(["batch", "seq_len"])["latency_p50_ms"] for k, g in src.ops.groupby("op_key")}
    out = src.ops.copy()
    vals = []
    for key_, kind, bb, ss, ms in zip(out["op_key"], out["kind"], out["batch"], out["seq_len"], out["latency_p50_ms"]):
        lr = ratio.get(key_)
        bend = 0.0
        if lr is None:
            lr = by_kind.get(kind, everyone)
        elif kind in curve:
            at_grid = {c: float(np.polyval(curve[kind], math.log(src_ms[key_][c]))) for c in lr.index}
            bend = (float(np.polyval(curve[kind], math.log(ms))) -
                    _bilinear(at_grid, gb, gs, int(bb), int(ss)))
        vals.append(float(ms) * math.exp(_bilinear(lr, gb, gs, int(bb), int(ss)) + bend))
    out["latency_p50_ms"] = vals
    return out


def transfer_spec(new: ProfileData) -> CalibrationSpec:
    """:data:`TRANSFER_SPEC` where the new profile's whole models span the product term (e.g. the four Contexts of
    :func:`e2e_contexts`), else :data:`TRANSFER_SPEC_PLANE`: at the three Contexts of an earlier transfer measurement
    the product is a multiple of log batch, and the ridge would split one slope between them arbitrarily."""
    import numpy as np

    from latency.calibration import _basis
    from nas.spaces.ops import Context

    e2e = new.e2e if new.e2e is not None else pd.DataFrame(columns=["batch", "seq_len"])
    ctxs = {Context(int(b), int(s)) for b, s in zip(e2e["batch"], e2e["seq_len"])}
    cols = np.array([_basis(TRANSFER_SPEC.alpha, c) for c in ctxs]).reshape(-1, len(TRANSFER_SPEC.alpha))
    return TRANSFER_SPEC if np.linalg.matrix_rank(cols) == len(TRANSFER_SPEC.alpha) else TRANSFER_SPEC_PLANE


def fit_transfer(src: ProfileData, new: ProfileData, kind: str | None = None, seed: int = 0) -> Predictor:
    """The new device's predictor from a transfer measurement: :func:`scaled_ops` as its op table (fitted as
    ``kind``, default the default kind's base) and a calibration layer on its whole-model rows
    (:func:`transfer_spec`)."""
    from latency.predictor import DEFAULT_KIND, fit

    kind = kind or DEFAULT_KIND
    if not kind.endswith("+calibration"):
        raise PredictorError(f"a transfer predictor is calibrated on the new device's whole models; choose a "
                             f"'+calibration' kind, not {kind!r}")
    b, s = src.grid()
    meta = {**new.meta, "grid": {"batch": b, "seq_len": s}}
    mixed = ProfileData(new.path, meta, scaled_ops(src, new), new.e2e)
    pred = fit(mixed, kind, seed=seed, spec=transfer_spec(new))
    pred.kind = f"{kind}+transfer"
    pred.profile = profile_hash(new.meta)
    pred.meta = {**pred.meta, "source_profile": src.name, "source_hash": profile_hash(src.meta),
                 "transfer": "source op table x per-op ratio measured at the grid's corners and middles; calibration "
                             "on the new device's whole models", "data_hash": data_hash(new.path)}
    return pred
