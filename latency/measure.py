"""Timing one entry under the protocol: warm-up, then runs until the median is stable or the time cap is reached.

Also the library entry point :func:`measure_arch` (one architecture end to end, as a user runs the exported
model), which ``hwnas measure`` and the benchmarks call.

>>> from nas.spaces import get_space
>>> from nas.spaces.ops import Context
>>> arch = get_space("nasbert", "tiny").sample(0)
>>> r = measure_arch(arch, Context(1, 16), backend="torch", protocol=Protocol(min_runs=3, time_cap_s=0.05))
>>> r["latency_p50_ms"] > 0 and r["n_runs"] >= 3
True
"""
from __future__ import annotations

import math
import os
import random
import statistics
import time
from dataclasses import replace

import torch

from latency.allocator import apply_allocator
from latency.backends.base import Backend, Runnable, get_backend
from latency.stats import (
    Protocol,
    at_reference,
    combine_visits,
    next_chunk,
    stop_reason,
    summarize,
    wants_retake,
)
from nas.spaces.ops import Context

EXPORT_CTX = Context(2, 16)  # example shape graphs are exported (traced) at; axes stay dynamic


def warm_up(backend: Backend, runnable: Runnable, protocol: Protocol) -> int:
    """Untimed runs: at least ``warmup_runs`` (unless one run alone lasts ``warmup_min_s``) and at least
    ``warmup_min_s`` seconds, in chunks sized from the runs so far so the minimum is not overshot. Returns the run
    count."""
    runs, spent, chunk = 0, 0.0, 1
    while True:
        times = backend.time(runnable, chunk)
        spent += sum(times)
        runs += chunk
        if spent >= protocol.warmup_min_s and (runs >= protocol.warmup_runs or min(times) >= protocol.warmup_min_s):
            return runs
        per_run = max(min(times), 1e-9)
        chunk = max(protocol.warmup_runs - runs, math.ceil((protocol.warmup_min_s - spent) / per_run), 1)


def warm_up_fresh(backend: Backend, runnable: Runnable, protocol: Protocol) -> int:
    """Untimed runs of a graph just prepared, for ``protocol.fresh_warmup_s`` (its first visit read slow)."""
    return warm_up(backend, runnable, replace(protocol, warmup_min_s=protocol.fresh_warmup_s))


def minor_faults() -> int | None:
    """This process's minor page faults so far (None where the OS does not count them)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


PROBE_N = 192  # the probe: two float32 matmuls of PROBE_N^3 (about 0.3 ms on one Zen 5 core)
PROBE_AROUND = 5  # probe samples just before a visit's timed runs and as many just after ...
PROBE_EVERY_S = 0.02  # ... and one between chunks of runs, at most this often
PROBE_REFERENCE_S = 1.0  # a profile's reference probe time: the median of this many seconds of samples ...
PROBE_QUICK_S = 0.3  # ... with --quick


class Probe:
    """A fixed CPU workload timed beside a visit's runs (``Protocol.probe == "matmul"``): two float32 matmuls of
    :data:`PROBE_N` cubed with fixed inputs, on the backend's thread count. On a VM the speed of the whole machine
    swings by a few per cent within seconds, alike for every workload; a visit's probe median tells by how much,
    and :func:`latency.stats.at_reference` divides it out (measured 2026-12-06 on the Zen 5 VM: across 25 visits
    of 12 whole models, interleaved with the probe run by run, the models' visit medians followed the probe's with a
    median slope of 0.99 and their visit-to-visit spread fell from ~3 % to ~1.4 % divided by it; an elementwise
    probe, memory-bound, tracked nothing)."""

    def __init__(self, threads: int = 1) -> None:
        g = torch.Generator().manual_seed(0)
        self.a = torch.randn(PROBE_N, PROBE_N, generator=g)
        self.b = torch.randn(PROBE_N, PROBE_N, generator=g)
        self.threads = threads

    def samples(self, n: int) -> list[float]:
        """``n`` probe times in seconds."""
        from latency.backends.torch import fixed_threads

        out, clock = [], time.perf_counter
        with fixed_threads(self.threads), torch.inference_mode():
            for _ in range(n):
                t0 = clock()
                self.a @ self.b
                self.a @ self.b
                out.append(clock() - t0)
        return out

    def reference(self, seconds: float = PROBE_REFERENCE_S) -> dict:
        """The probe's median over ``seconds`` of samples after 0.1 s of warm-up: a profile's reference time."""
        self.samples(3)
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:
            self.samples(5)
        xs: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            xs += self.samples(5)
        ms = [x * 1e3 for x in xs]
        med = statistics.median(ms)
        return {"workload": f"2 x float32 matmul {PROBE_N}x{PROBE_N}x{PROBE_N}, {self.threads} thread(s)",
                "reference_ms": round(med, 6), "samples": len(ms),
                "spread_pct": round(100 * statistics.median(abs(x - med) for x in ms) / med, 2)}


def measure_runnable(backend: Backend, runnable: Runnable, protocol: Protocol, time_cap_s: float | None = None,
                     faults: list[int] | None = None, probe: Probe | None = None,
                     probe_s: list[float] | None = None) -> tuple[list[float], str]:
    """Warm up, then time in growing chunks until :func:`latency.stats.stop_reason` says stop.

    Args:
        faults: if given, the minor page faults the process took during the timed runs are appended to it.
        probe: time this :class:`Probe` :data:`PROBE_AROUND` times just before the timed runs and just after, and
            once between chunks at most every :data:`PROBE_EVERY_S`; its times (seconds) go to ``probe_s``.
    Returns:
        (raw timings in seconds, the stop reason).
    """
    warm_up(backend, runnable, protocol)
    samples: list[float] = []
    if probe is not None:
        probe_s += probe.samples(PROBE_AROUND)
        probed = time.perf_counter()
    before = minor_faults() if faults is not None else None
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        reason = stop_reason(samples, elapsed, protocol, time_cap_s)
        if reason:
            if before is not None:
                faults.append(minor_faults() - before)
            if probe is not None:
                probe_s += probe.samples(PROBE_AROUND)
            return samples, reason
        samples += backend.time(runnable, next_chunk(samples, elapsed, protocol, time_cap_s))
        if probe is not None and time.perf_counter() - probed >= PROBE_EVERY_S:
            probe_s += probe.samples(1)
            probed = time.perf_counter()


def measure_in_rounds(backend: Backend, entries: dict[str, Runnable], protocol: Protocol, kind: str = "e2e",
                      seed: int = 0, probe_reference_ms: float | None = None) -> dict[str, dict]:
    """Time prepared runnables the profiler's way: ``visits`` rounds (of ``kind``'s rules), each visiting every
    entry once in its own seeded order, then extra rounds for the entries whose visits disagree
    (:func:`wants_retake`), up to ``max_visits``. Each visit follows ``protocol.for_kind(kind)``. Returns per entry
    :func:`combine_visits`, with ``faults_per_run`` (the median over visits of the minor page faults per timed run,
    where the OS counts them: memory the runs took fresh from the OS, see :data:`FAULT_WARN_PER_RUN`) and
    ``allocator`` (what :func:`latency.allocator.apply_allocator` set for ``protocol.allocator``).

    With one entry this is what ``hwnas measure`` does; with several (a student, its teacher and BERT-base) the
    rounds interleave them, so slow drift of the machine moves all alike.

    Under ``protocol.probe`` (not ``none``; never on a GPU) the :class:`Probe` is timed beside every visit and each
    entry also gets ``probe_ms`` (the median of its visits' probe medians); with ``probe_reference_ms`` (a profile's
    ``probe.reference_ms``) also ``probe_vs_reference`` and ``latency_at_reference_ms``, the p50 of its visits each
    scaled to that reference (:func:`latency.stats.at_reference`): what the profile's rows hold, the machine's
    moment divided out. Retakes then follow the scaled visits, as the profiler's do; the other fields stay raw.
    """
    rules = protocol.for_kind(kind)
    allocator = apply_allocator(protocol.allocator)
    backend.settle()
    probe = Probe(backend.threads) if protocol.probe != "none" and backend.device != "cuda" else None
    scale = probe is not None and probe_reference_ms is not None

    def judged(x: dict) -> dict:
        return at_reference(x, probe_reference_ms) if scale else x

    for r in entries.values():  # every session is fresh here
        warm_up_fresh(backend, r, protocol)
    visits: dict[str, list[dict]] = {k: [] for k in entries}
    for v in range(max(rules.visits, rules.max_visits)):
        order = [k for k in entries if v < rules.visits or wants_retake(
            [judged(x)["latency_p50_ms"] for x in visits[k]], rules)]
        if not order:
            break
        random.Random(f"{seed}:visit{v}").shuffle(order)
        for name in order:
            faults: list[int] = []
            probe_s: list[float] = []
            samples, reason = measure_runnable(backend, entries[name], rules, faults=faults, probe=probe,
                                               probe_s=probe_s)
            visits[name].append({**summarize(samples, protocol.rse_method), "stop": reason,
                                 "faults_per_run": faults[0] / len(samples) if faults and samples else None,
                                 **({"probe_ms": round(statistics.median(probe_s) * 1e3, 6)} if probe else {})})
    out = {}
    for k, v in visits.items():
        per_run = [x["faults_per_run"] for x in v if x["faults_per_run"] is not None]
        out[k] = {**combine_visits(v, protocol.statistic),
                  "faults_per_run": round(statistics.median(per_run), 1) if per_run else None, "allocator": allocator}
        if probe is not None:
            out[k]["probe_ms"] = round(statistics.median(x["probe_ms"] for x in v), 6)
        if scale:
            out[k]["probe_vs_reference"] = round(out[k]["probe_ms"] / probe_reference_ms, 4)
            out[k]["latency_at_reference_ms"] = combine_visits([judged(x) for x in v], protocol.statistic)[
                "latency_p50_ms"]
    return out


def measure_visits(backend: Backend, runnable: Runnable, protocol: Protocol, kind: str = "e2e",
                   probe_reference_ms: float | None = None) -> dict:
    """One entry on its own, visited as the profiler visits its entries (:func:`measure_in_rounds`)."""
    return measure_in_rounds(backend, {"entry": runnable}, protocol, kind,
                             probe_reference_ms=probe_reference_ms)["entry"]


def token_inputs(space, ctx: Context, seed: int = 0) -> dict[str, torch.Tensor]:
    """A user's inputs at ``ctx``: ``input_ids``, ``attention_mask`` (no padding) and ``token_type_ids`` where the
    space's exported graph takes them (the same names :func:`nas.export.space_inputs` gives)."""
    from nas.export import space_inputs

    return space_inputs(space, batch=ctx.batch, seq_len=ctx.seq_len, pair=False, seed=seed, padded=False)


def measure_arch(arch, ctx: Context, backend: str | Backend = "onnxruntime", device: str = "cpu", threads: int = 1,
                 protocol: Protocol | None = None, num_labels: int = 2, probe_reference_ms: float | None = None
                 ) -> dict:
    """Time one architecture end to end at one Context (exported model on onnxruntime, eager on torch).

    Args:
        arch: an :class:`nas.arch.Architecture` or the path of an architecture file.
        ctx: the deployment shape ``Context(batch, seq_len)``.
        backend: a backend name (``onnxruntime``, ``torch``) or an open :class:`Backend` (then ``device`` and
            ``threads`` are its own).
        protocol: the measurement protocol (default: :class:`Protocol`'s, whole-architecture time cap).
        probe_reference_ms: a profile's reference probe time (``profile.json`` ``probe.reference_ms``): also
            ``probe_vs_reference`` and ``latency_at_reference_ms`` (:func:`measure_in_rounds`).
    Returns:
        ``latency_p50_ms, latency_p10_ms, latency_p90_ms, cv, n_runs, visits, visit_spread, faults_per_run`` (and
        under a probe ``probe_ms``) plus
        ``batch, seq_len, flops, params, arch_json, space, preset`` and the backend's ``backend, version, device,
        threads``.
    """
    from nas.arch import Architecture

    if not isinstance(arch, Architecture):
        arch = Architecture.load(arch)
    protocol = protocol or Protocol()
    space = arch.get_space()
    check_context(space, ctx)
    own = not isinstance(backend, Backend)
    apply_allocator(protocol.allocator)  # before the model is built, as a profile's session does
    be = get_backend(backend, threads=threads, device=device) if own else backend
    try:
        inputs = token_inputs(space, ctx)
        runnable = be.prepare_arch(arch, token_inputs(space, EXPORT_CTX), num_labels=num_labels)
        be.bind(runnable, inputs)
        result = measure_visits(be, runnable, protocol, probe_reference_ms=probe_reference_ms)
        runnable.release()
    finally:
        if own:
            be.close()
    return {
        "arch_json": arch.key, "space": arch.space, "preset": arch.preset, "batch": ctx.batch,
        "seq_len": ctx.seq_len, **result,
        "flops": space.flops(arch, ctx, num_labels), "params": space.analytic_params(arch, num_labels),
        "backend": be.name, "version": be.version, "device": be.device, "threads": be.threads,
    }


FAULT_WARN_PER_RUN = 256  # minor page faults per timed run (1 MiB of 4 KiB pages) from which a measurement may warn ...
FAULT_COST_US = 1.5  # ... by what they cost: one fault, measured (the Zen 5 VM, 2026-12-05: the time the 23 heavy rows
# of results/page_faults.json lost to their faults under glibc's defaults against mmap off, over their count: median
# 1.5 us, 1.1-3.7)
FAULT_WARN_SHARE = 0.02  # ... and warns where they cost at least this share of the run (a few hundred faults of a
# 300 ms model, 0.1 %, are the heap growing in a first visit, not the model's time)


def fault_share(result: dict) -> float | None:
    """The share of a run's median time its page faults cost at :data:`FAULT_COST_US` each (None without both).

    >>> round(fault_share({"faults_per_run": 68000.0, "latency_p50_ms": 434.0}), 2)
    0.24
    """
    f, ms = result.get("faults_per_run"), result.get("latency_p50_ms")
    return f * FAULT_COST_US / 1000 / ms if f is not None and ms else None


def fault_warning(result: dict) -> str | None:
    """One line when a measurement's runs took fresh memory from the OS on every run (``faults_per_run`` of
    :func:`measure_in_rounds` at least :data:`FAULT_WARN_PER_RUN`, on a CPU, costing at least
    :data:`FAULT_WARN_SHARE` of ``latency_p50_ms`` where that is given), else None.

    Eager torch allocates every activation afresh; glibc's malloc with its defaults hands large blocks back to the
    OS and takes them again, page-faulting each page, or keeps them, depending on what the process allocated before.
    The same model then reads faster or slower by process history alone (``benchmarks/README.md``, *page faults*: up
    to 1.6x between two processes with glibc's defaults, 2.3x against one with mmap off, at batch 32), while
    onnxruntime's arena does not fault per run. The protocol's ``allocator: no_mmap`` (:mod:`latency.allocator`)
    stops it.

    >>> fault_warning({"faults_per_run": 3.0, "device": "cpu"}) is None
    True
    >>> fault_warning({"faults_per_run": 9000.0, "device": "cpu"}).startswith("each run took 9000 fresh pages")
    True
    >>> fault_warning({"faults_per_run": 300.0, "latency_p50_ms": 310.0, "device": "cpu"}) is None  # 0.1 % of it
    True
    """
    f = result.get("faults_per_run")
    if f is None or f < FAULT_WARN_PER_RUN or result.get("device") == "cuda":
        return None
    share = fault_share(result)
    if share is not None and share < FAULT_WARN_SHARE:
        return None
    mb = f * os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else f * 4096 / 2**20
    cost = f", about {100 * min(share, 1):.0f} % of its time at {FAULT_COST_US} us a fault" if share is not None else ""
    return (f"each run took {f:.0f} fresh pages ({mb:.1f} MB) from the OS{cost}: the memory allocator gave memory back "
            f"between runs, and how much it gives back depends on what the process allocated before, so another "
            f"process can run this model faster or slower (README, 'Page faults')")


SPEED_TOLERANCE = 0.15  # measured / predicted beyond 1.15x or under 1 / 1.15x: the profile is not this machine


def speed_ratio(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The median of measured / predicted over ``(predicted_ms, measured_ms)`` pairs (None: no usable pair).

    >>> speed_ratio([(2.0, 1.0), (4.0, 2.2), (1.0, None)])
    0.525
    """
    import statistics

    r = [m / p for p, m in pairs if p and m and p > 0 and m > 0]
    return statistics.median(r) if r else None


def speed_warning(ratio: float | None, profile: str, tol: float = SPEED_TOLERANCE, faulted: bool = False
                  ) -> str | None:
    """One line when what was measured is ``ratio`` x what the profile predicts and that is beyond ``tol`` either
    way (the predictor's held-out error is a few percent): the profile's device and this machine are not running
    alike (another CPU under the same name, a busy machine, another library build), so the budget the search
    aimed at is not this machine's. None when within. ``faulted``: the runs page-faulted (:func:`fault_warning`),
    which names a cause in this process before another machine.

    >>> speed_warning(1.08, "p") is None, speed_warning(0.54, "p")[:40]
    (True, 'measured 0.54x the latency that profile ')
    >>> "page-faulted" in speed_warning(1.2, "p", faulted=True)
    True
    """
    if ratio is None or (1 / (1 + tol)) <= ratio <= 1 + tol:
        return None
    head = f"measured {ratio:.2f}x the latency that profile {profile} predicts (more than {tol:.0%} off): "
    if faulted:
        return head + ("the runs page-faulted (next warning), which moves eager torch's latency with the memory "
                       "allocator's state; if the allocator's settings match the profile's (`device.allocator_env`), "
                       f"this machine does not run like the profile's device: `hwnas recheck {profile}`")
    return head + ("this machine does not run like the profile's device (another CPU under the same name, other load, "
                   f"another library build); profile this machine (`hwnas profile --transfer-from {profile} --out "
                   "NEW`, about 3 minutes) and search with NEW")


def probe_reference(meta: dict) -> float | None:
    """A profile's reference probe time (``profile.json`` ``probe.reference_ms``) where it was measured with a
    probe, else None.

    >>> probe_reference({"protocol": {"probe": "matmul"}, "probe": {"reference_ms": 0.28}}), probe_reference({})
    (0.28, None)
    """
    if (meta.get("protocol") or {}).get("probe", "none") == "none":
        return None
    return (meta.get("probe") or {}).get("reference_ms")


RECHECK_MAX = 0.15  # a recheck farther off than this is not drift but another machine: re-profile instead


def speed_in_bounds(factor: float) -> bool:
    """Whether a speed factor is drift, within :data:`RECHECK_MAX` either way (1 / 1.15 to 1.15), not another
    machine: the one bound ``hwnas recheck`` writes under and ``predictor.json`` is loaded under.

    >>> speed_in_bounds(1.14), speed_in_bounds(0.86), speed_in_bounds(0.88)
    (True, False, True)
    """
    return 1 / (1 + RECHECK_MAX) <= factor <= 1 + RECHECK_MAX


def recheck(prof, n: int = 16, seed: int = 0) -> dict:
    """``n`` of the profile's ``test``-split whole-model rows (a transfer profile's, which has none: its calibration
    rows) re-measured now, one :func:`measure_arch` call each with the profile's backend, threads and protocol: how
    this machine runs today against the day it was profiled.

    Returns ``{n, median_signed_diff_pct, median_abs_diff_pct, p90_abs_diff_pct, max_abs_diff_pct, factor,
    factor_se_pct, unsteady, rows_faulting, rows}`` with ``factor = 1 + median_signed_diff_pct / 100`` (what the
    profile's latencies are to be multiplied by), ``factor_se_pct`` its standard error (:func:`factor_se`, in %),
    ``unsteady`` whether that is above :data:`UNSTEADY_SE` (the rows disagree on the machine's speed),
    ``rows_faulting`` the rows whose runs page-faulted (:func:`fault_warning`: their time depends on the allocator's
    state, not only the machine's speed) and ``rows`` the pairs (profile ms, now ms). For a profile measured with a
    probe also ``probe_vs_reference`` (the probe now over the profile's reference, median over the rows: the
    machine's speed by the probe alone, above 1 slower) and ``factor_at_reference`` (the rows' factor with each
    visit scaled to the reference: what the probe does not explain). A machine's speed can change by
    several percent (``benchmarks/README.md``: the Zen 5 VM read 5-7 % slower than its profile two to three hours
    later, in states that flip within minutes); a search aims at a budget, so a predictor can carry this factor
    (:meth:`latency.predictor.Predictor.set_speed`, ``hwnas recheck --apply``).
    """
    from latency.profile_data import PredictorError
    from latency.stats import Protocol, retest_agreement
    from nas.arch import Architecture

    if n < 1:
        raise PredictorError(f"--rows must be at least 1, got {n}")
    if prof.e2e is None or prof.e2e.empty:
        raise PredictorError(f"{prof.path} has no whole-model rows to re-measure; profile with `--e2e N`")
    test = prof.e2e[prof.e2e["split"] == "test"]
    test = test if len(test) else prof.e2e
    backend = prof.meta["backend"]
    protocol = Protocol.from_dict(prof.meta["protocol"])
    reference = probe_reference(prof.meta)
    pairs, faulting, at_ref, probes = [], 0, [], []
    for _, r in test.sample(n=min(n, len(test)), random_state=seed).iterrows():
        m = measure_arch(Architecture.from_json(r["arch_json"]), Context(int(r["batch"]), int(r["seq_len"])),
                         backend=backend["name"], device=backend.get("device", "cpu"),
                         threads=int(backend["threads"]), protocol=protocol, probe_reference_ms=reference)
        pairs.append((float(r["latency_p50_ms"]), float(m["latency_p50_ms"])))
        faulting += fault_warning(m) is not None
        if "latency_at_reference_ms" in m:
            at_ref.append(m["latency_at_reference_ms"] / float(r["latency_p50_ms"]))
            probes.append(m["probe_vs_reference"])
    agree = {k: v for k, v in retest_agreement([a for a, _ in pairs], [b for _, b in pairs]).items()
             if k != "within_2pct"}
    se = factor_se([b / a for a, b in pairs])
    probed = ({"probe_vs_reference": round(statistics.median(probes), 4),
               "factor_at_reference": round(statistics.median(at_ref), 4)} if at_ref else {})
    return {**agree, "factor": 1 + agree["median_signed_diff_pct"] / 100, "factor_se_pct": round(100 * se, 3),
            "unsteady": se > UNSTEADY_SE, "rows_faulting": faulting, **probed, "rows": pairs}


UNSTEADY_SE = 0.015  # a recheck whose factor's standard error is above this (a fraction) read a machine whose
# speed moved while it measured, or not alike for every model (a 95 % interval of +-3 %, more than half the 5 % a
# budget allows over it); two rechecks a minute apart on the Zen 5 VM, both about 13 % slow (2026-12-06 12:26 UTC):
# torch's 16 rows 1.0 % (a uniformly slower machine, which the factor follows), onnxruntime's 1.8 % (README)


def factor_se(ratios: list[float]) -> float:
    """The relative standard error of a recheck's factor, the median of the rows' now / profile ratios (robust: from
    their MAD); ``inf`` with fewer than 2 rows.

    >>> round(factor_se([1.00, 1.01, 0.99, 1.02, 0.98, 1.00]), 4), round(factor_se([1.00, 1.12, 0.95, 1.20, 1.04]), 3)
    (0.0076, 0.064)
    """
    from latency.stats import rse_median

    return rse_median(ratios)


def reference_rows(prof, n: int, contexts=(), seed: int = 0, space: str | None = None) -> list[tuple]:
    """``n`` of the profile's ``test``-split whole-model rows (all its rows where it has no test split) as
    ``(profile ms, architecture, Context)``: at ``contexts`` first (spaces and Contexts taking turns), the others
    only where those run out; only ``space``'s rows when given. Measured beside a model in the same shuffled rounds
    (:func:`measure_with_references`), they read the machine's speed in those very minutes against the profile's."""
    from nas.arch import Architecture

    if n <= 0 or prof.e2e is None or prof.e2e.empty:
        return []
    rows = prof.e2e if space is None else prof.e2e[prof.e2e["space"] == space]
    test = rows[rows["split"] == "test"]
    test = (test if len(test) else rows).sample(frac=1.0, random_state=seed)
    wanted = {(c.batch, c.seq_len) for c in contexts}
    on = test[[(int(b), int(q)) in wanted for b, q in zip(test["batch"], test["seq_len"])]]
    ordered = on.assign(_k=on.groupby(["space", "batch", "seq_len"]).cumcount()).sort_values("_k", kind="stable")
    rest = test.drop(on.index)
    return [(float(r["latency_p50_ms"]), Architecture.from_json(r["arch_json"]), Context(int(r["batch"]), int(r["seq_len"])))
            for _, r in [*ordered.iterrows(), *rest.iterrows()][:n]]


def measure_with_references(arch, ctx: Context, refs: list[tuple], backend: str = "onnxruntime", device: str = "cpu",
                            threads: int = 1, protocol: Protocol | None = None, num_labels: int = 2,
                            seed: int = 0) -> dict:
    """Time ``arch`` at ``ctx`` in the same shuffled rounds as the profile's ``refs`` (:func:`reference_rows`), the
    profiler's way (:func:`measure_in_rounds`). Returns ``latency_p50_ms`` (the architecture's), ``speed`` (the
    median over the references of now / profile: how fast the machine ran in those minutes against the profile, 1.08
    = 8 % slower) and ``references`` (their count)."""
    protocol = protocol or Protocol()
    check_context(arch.get_space(), ctx)
    apply_allocator(protocol.allocator)
    with get_backend(backend, threads=threads, device=device) as be:
        entries = {}
        for name, a, c, labels in [("arch", arch, ctx, num_labels),
                                   *((f"ref{j}", a, c, 2) for j, (_, a, c) in enumerate(refs))]:
            sp = a.get_space()
            entries[name] = be.prepare_arch(a, token_inputs(sp, EXPORT_CTX), num_labels=labels)
            be.bind(entries[name], token_inputs(sp, c))
        stats = measure_in_rounds(be, entries, protocol, seed=seed)
        for r in entries.values():
            r.release()
    ratios = [stats[f"ref{j}"]["latency_p50_ms"] / ms for j, (ms, *_r) in enumerate(refs)]
    return {"latency_p50_ms": float(stats["arch"]["latency_p50_ms"]),
            "speed": float(statistics.median(ratios)) if ratios else 1.0, "references": len(ratios)}


def check_context(space, ctx: Context) -> None:
    """Refuse a Context the space's position table cannot hold, or a non-positive one."""
    from nas.errors import HwnasError

    if ctx.batch < 1 or ctx.seq_len < 1:
        raise HwnasError(f"--batch and --seq-len must be positive, got batch={ctx.batch} seq_len={ctx.seq_len}")
    max_len = getattr(space.preset, "max_len", None)
    if max_len is not None and ctx.seq_len > max_len:
        raise HwnasError(
            f"--seq-len {ctx.seq_len} exceeds the position table of space {space.name!r} preset "
            f"{space.preset.name!r} (max_len={max_len}); use --seq-len <= {max_len}"
        )


def quick_protocol(protocol: Protocol) -> Protocol:
    """The ``--quick`` protocol: fewer runs and short caps (a demo, not a reference profile)."""
    return replace(protocol, warmup_runs=1, warmup_min_s=0.01, min_runs=3, time_cap_s=0.04, e2e_time_cap_s=0.15,
                   e2e_warmup_runs=2, e2e_warmup_min_s=0.03, e2e_min_runs=4, fresh_warmup_s=0.03, visits=2,
                   max_visits=3, retest_fraction=0.05, retest_min=5)


def cuda_protocol(protocol: Protocol) -> Protocol:
    """The default protocol's GPU form: shorter warm-ups, the same runs, visits and retakes. The backend's
    :meth:`~latency.backends.base.Backend.settle` ramps the GPU's clocks up once before anything is timed and the
    unbroken stream of visits keeps them up; weights stay in device memory, so a visit's warm-up only refills the
    L2 cache and the allocator, which a few runs (microseconds to milliseconds each) do. The CPU's 0.1 s per
    whole-model visit would be hundreds of GPU runs and most of a profile's time. Sessions are kept across visits
    (a CUDA session takes a second to create). No CPU probe beside the visits: it says nothing of the GPU's clocks."""
    return replace(protocol, warmup_min_s=0.01, e2e_warmup_min_s=0.03, fresh_warmup_s=0.1, e2e_session="shared",
                   probe="none")
