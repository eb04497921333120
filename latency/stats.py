"""Statistics of raw timings, apart from measuring them: every function here is pure and tested on saved numbers.

A backend returns a list of seconds, one per run; :func:`summarize` turns it into the table's columns and
:func:`stop_reason` decides when an entry has been measured enough (the protocol's repeats rule).

>>> s = summarize([0.010, 0.011, 0.012, 0.010, 0.011])
>>> s["latency_p50_ms"], s["n_runs"]
(11.0, 5)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

MAD_TO_SD = 1.4826  # sd of a normal distribution per unit of median absolute deviation
MEDIAN_SE = 1.2533  # sqrt(pi/2): standard error of the median per sd/sqrt(n) for a normal distribution
VISIT_PROCESSES = ("one", "per_round")  # Protocol.visit_processes
PROBES = ("matmul", "none")  # Protocol.probe
SCALED = ("latency_p50_ms", "latency_p10_ms", "latency_p90_ms", "mean_ms", "sd_ms")  # a visit's fields in ms


@dataclass(frozen=True)
class Protocol:
    """How each entry is measured; written into profile.json next to the numbers."""

    warmup_runs: int = 1  # untimed runs before each visit's timed runs (at least, unless one run alone lasts ...)
    warmup_min_s: float = 0.02  # ... this long; and warm up for at least this long
    min_runs: int = 5  # timed runs per visit, at least ...
    cap_min_runs: int = 3  # ... unless the time cap comes first: then at least this many
    max_runs: int = 2000  # timed runs per visit, at most
    target_rse: float = 0.01  # a visit stops once the relative standard error of its median is at most this
    time_cap_s: float = 0.15  # ... or once an op entry's visit has been timed this long (min_runs still apply)
    e2e_time_cap_s: float = 0.6  # the same cap for a whole architecture's visit
    e2e_warmup_runs: int = 2  # a whole model's visit warms up longer (its first runs touch every weight) ...
    e2e_warmup_min_s: float = 0.1  # ... at least this many runs and seconds
    e2e_min_runs: int = 8  # a whole model's visit times at least this many runs (5 runs let MAD stop on luck)
    fresh_warmup_s: float = 0.3  # a graph just prepared (new session) first runs untimed this long: its first
    # visit otherwise read 2-3 % slow (whole models; 4-9 % for a lone `hwnas measure` visit)
    visits: int = 3  # each entry is measured in this many visits, in separate shuffled rounds over all entries
    e2e_visits: int = 2  # ... a whole model in this many (replaying the AMD profile's retest entries: 0.92 % with two
    # visits against 0.60 % with three, inside the 2 % target; two cut a default profile by minutes); a retake adds more
    retake_spread: float = 0.03  # an entry whose visit medians lack a majority within this of one of them ...
    max_visits: int = 5  # ... gets more visits, in extra shuffled rounds, up to this many (a disturbed visit)
    budget_s: float | None = None  # a session measures for at most this long (None: no limit): whole models' main
    # visits are always taken, op visits and retakes skipped as the end nears; rows from the visits an entry has
    # (a transfer's 3 minutes, latency.profiler.measure_jobs)
    statistic: str = "median"  # latency_p50_ms: the median of the visits' medians (p10/p90 likewise); CV pooled.
    # "min": the fastest visit's percentiles (for a machine whose speed drifts in bursts: a lent GPU whose
    # visits spread 55 % repeated to 3.5 % with it against 19 % with the median, benchmarks/README.md "GPU")
    rse_method: str = "mad"  # standard error of the median: 1.2533 * 1.4826 * MAD / sqrt(n) (robust to outliers)
    order: str = "shuffled"  # each round measures the entries in a seeded random order (drift favours no op)
    seed: int = 0  # the order's and the retest sample's seed
    retest_fraction: float = 0.05  # share of entries measured a second time, as separate entries: test-retest
    retest_min: int = 20  # ... at least this many
    retest: str = "interleaved"  # the second measurement's visits share the main rounds (slow drift hits both)
    e2e_session: str = "per_visit"  # a whole model's every visit gets a new session that runs only its Context, as
    # a user's session at one shape does ("shared": one session per graph across every Context, the rule before
    # 2026-12-04: with onnxruntime AdaBERT at b1 s128 then read 2.3-3.0 % slower than in a session of its own, and
    # shrinking the session's arena did not help). torch modules hold no such state: the same either way
    visit_processes: str = "one"  # "one": every visit in the profile's process; "per_round": each round of visits
    # (and each round of retakes) in a fresh process of its own, so an entry's visits sample as many processes: eager
    # torch draws a speed per process and convolution shape (benchmarks/process_states.py); a row is then the median
    # over processes' draws, as a user's process is one more draw (latency.profiler.RoundProcess)
    allocator: str = "no_mmap"  # the C allocator while measuring (latency.allocator): "no_mmap" takes every block
    # from a heap that is never handed back, so a model's runs take no page faults once it has grown (eager torch
    # otherwise faulted or not by the process's history: 1.6x apart); "default": glibc's own settings

    probe: str = "matmul"  # "matmul": a fixed CPU workload (latency.measure.Probe) is timed beside every visit's
    # runs, and the visit is scaled by the profile's reference probe time over the visit's (at_reference): the VM's
    # speed swings +-3 % within seconds, common to every workload (a probe's and a model's visit medians moved with
    # slope 0.99; divided out, a whole model's visit-to-visit sd went from ~3 % to ~1.4 %). "none": raw visits
    # (GPU profiles: a CPU probe says nothing of the GPU's clocks)

    def for_kind(self, kind: str) -> Protocol:
        """The rules one visit of an ``op`` or ``e2e`` entry follows (whole models: their own warm-up, runs, cap)."""
        if kind != "e2e":
            return self
        return replace(self, warmup_runs=self.e2e_warmup_runs, warmup_min_s=self.e2e_warmup_min_s,
                       min_runs=self.e2e_min_runs, time_cap_s=self.e2e_time_cap_s, visits=self.e2e_visits)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Protocol:
        """The protocol stored in a profile. A profile written before a field existed was measured without it:
        such fields take the value that reproduces the old rules (:data:`LEGACY`), not today's default."""
        names = {f.name for f in fields(Protocol)}
        legacy = {k: (d.get(v[1:], getattr(Protocol, v[1:])) if isinstance(v, str) and v.startswith("=") else v)
                  for k, v in LEGACY.items()}
        return Protocol(**{**legacy, **{k: v for k, v in d.items() if k in names}})


# fields added after profiles were shipped -> the old behaviour: another field's value ("=name") or a constant
LEGACY = {"e2e_warmup_runs": "=warmup_runs", "e2e_warmup_min_s": "=warmup_min_s", "e2e_min_runs": "=min_runs",
          "fresh_warmup_s": 0.0, "retake_spread": float("inf"), "max_visits": 0, "retest": "after",
          "e2e_visits": "=visits", "e2e_session": "shared", "allocator": "default", "probe": "none"}


def as_array(samples_s) -> np.ndarray:
    x = np.asarray(samples_s, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("expected a non-empty 1-D list of timings")
    return x


def cv(samples_s) -> float:
    """Coefficient of variation: sample standard deviation over mean (0 for a single run)."""
    x = as_array(samples_s)
    if x.size < 2 or x.mean() == 0:
        return 0.0
    return float(x.std(ddof=1) / x.mean())


def rse_median(samples_s, method: str = "mad", n_boot: int = 200, seed: int = 0) -> float:
    """Relative standard error of the median (a fraction of the median).

    Args:
        samples_s: timings.
        method: ``"mad"``: 1.2533 * 1.4826 * MAD / sqrt(n) / median (robust, cheap); ``"sd"``: with the sample
            standard deviation; ``"bootstrap"``: the sd of medians of ``n_boot`` resamples (fixed ``seed``).
    Returns:
        ``inf`` with fewer than 2 runs.
    """
    x = as_array(samples_s)
    n, med = x.size, float(np.median(x))
    if n < 2 or med <= 0:
        return math.inf
    if method == "mad":
        spread = MAD_TO_SD * float(np.median(np.abs(x - med)))
        return MEDIAN_SE * spread / math.sqrt(n) / med
    if method == "sd":
        return MEDIAN_SE * float(x.std(ddof=1)) / math.sqrt(n) / med
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        meds = np.median(x[rng.integers(0, n, size=(n_boot, n))], axis=1)
        return float(meds.std(ddof=1) / med)
    raise ValueError(f"unknown rse method {method!r}; use mad, sd or bootstrap")


def summarize(samples_s, method: str = "mad") -> dict:
    """The table's latency columns from raw timings in seconds (milliseconds out, rounded to 1 ns), plus the
    mean and standard deviation that :func:`combine_visits` pools."""
    x = as_array(samples_s) * 1e3
    p10, p50, p90 = (round(float(v), 6) for v in np.percentile(x, [10, 50, 90]))
    return {
        "latency_p50_ms": p50,
        "latency_p10_ms": p10,
        "latency_p90_ms": p90,
        "cv": round(cv(x), 6),
        "n_runs": int(x.size),
        "rse": round(rse_median(x, method), 6),
        "mean_ms": round(float(x.mean()), 6),
        "sd_ms": round(float(x.std(ddof=1)) if x.size > 1 else 0.0, 6),
    }


def at_reference(visit: dict, reference_ms: float) -> dict:
    """A visit's summary (:func:`summarize` plus ``probe_ms``, the median time of the probe beside its runs) at the
    machine speed of ``reference_ms`` (the profile's reference probe time): every millisecond field scaled by
    ``reference_ms / probe_ms``; ``cv``, ``rse`` and ``probe_ms`` itself unchanged, so the raw visit is
    ``value * probe_ms / reference_ms``.

    >>> at_reference({"latency_p50_ms": 2.0, "latency_p10_ms": 1.9, "latency_p90_ms": 2.2, "mean_ms": 2.0,
    ...               "sd_ms": 0.1, "cv": 0.05, "probe_ms": 0.22}, 0.2)["latency_p50_ms"]
    1.818182
    """
    probe = float(visit["probe_ms"])
    if not (probe > 0 and reference_ms > 0 and math.isfinite(probe)):
        raise ValueError(f"probe time {visit.get('probe_ms')!r} / reference {reference_ms!r}: both must be positive")
    f = reference_ms / probe
    return {**visit, **{k: round(float(visit[k]) * f, 6) for k in SCALED if k in visit}}


def combine_visits(visits: list[dict], statistic: str = "median") -> dict:
    """One entry's latency from its visits (each a :func:`summarize` result).

    The percentiles are the medians of the visits' percentiles (one visit spoiled by a burst of load is
    outvoted; ``statistic="min"``: the percentiles of the fastest visit, the one with the lowest median),
    ``n_runs`` the total, ``cv`` the CV of all runs pooled (exact, from each visit's mean and sd),
    ``visit_spread`` the range of the visits' medians over their median.

    >>> v = [summarize([0.010, 0.010, 0.011]), summarize([0.010, 0.011, 0.011]), summarize([0.030] * 3)]
    >>> combine_visits(v)["latency_p50_ms"], combine_visits(v)["n_runs"], combine_visits(v, "min")["latency_p50_ms"]
    (11.0, 9, 10.0)
    """
    if not visits:
        raise ValueError("combine_visits: no visits")
    if statistic not in ("median", "min"):
        raise ValueError(f"unknown statistic {statistic!r}; use median or min")
    n = np.array([v["n_runs"] for v in visits], dtype=float)
    m = np.array([v["mean_ms"] for v in visits], dtype=float)
    sd = np.array([v["sd_ms"] for v in visits], dtype=float)
    total, mean = n.sum(), float((n * m).sum() / n.sum())
    var = (((n - 1) * sd**2).sum() + (n * (m - mean) ** 2).sum()) / max(total - 1, 1)
    p50s = np.array([v["latency_p50_ms"] for v in visits], dtype=float)
    if statistic == "min":
        fastest = visits[int(np.argmin(p50s))]
        pick = lambda k: round(float(fastest[k]), 6)  # noqa: E731
    else:
        pick = lambda k: round(float(np.median([v[k] for v in visits])), 6)  # noqa: E731
    p50 = round(float(np.median(p50s)), 6)
    return {
        "latency_p50_ms": pick("latency_p50_ms"),
        "latency_p10_ms": pick("latency_p10_ms"),
        "latency_p90_ms": pick("latency_p90_ms"),
        "cv": round(float(np.sqrt(var) / mean), 6) if mean > 0 else 0.0,
        "n_runs": int(total),
        "visits": len(visits),
        "visit_spread": round(float((p50s.max() - p50s.min()) / p50), 6) if p50 > 0 else 0.0,
    }


def wants_retake(visit_p50_ms, protocol: Protocol) -> bool:
    """Whether an entry needs another visit: all ``protocol.visits`` taken (pass the rules of the entry's kind,
    :meth:`Protocol.for_kind`), fewer than ``max_visits``, and no majority of its visits within ``retake_spread``
    of one of them. One visit disturbed by load is outvoted by the others and needs nothing; when the visits all
    disagree (two visits: when they differ), the median is not to be trusted yet.

    >>> p = Protocol()
    >>> wants_retake([1.0, 1.01, 1.2], p), wants_retake([1.0, 1.1, 1.2], p), wants_retake([1.0, 1.2], p)
    (False, True, False)
    >>> e2e = p.for_kind("e2e")
    >>> wants_retake([1.0, 1.02], e2e), wants_retake([1.0, 1.2], e2e)
    (False, True)
    """
    n = len(visit_p50_ms)
    if n < protocol.visits or n >= protocol.max_visits:
        return False
    x = np.asarray(visit_p50_ms, dtype=np.float64)
    if x.min() <= 0:
        return False
    agree = max(int((np.abs(x - xi) <= protocol.retake_spread * xi).sum()) for xi in x)
    return agree < n // 2 + 1


def stop_reason(samples_s, elapsed_s: float, protocol: Protocol, time_cap_s: float | None = None) -> str | None:
    """Whether to stop timing a visit: ``"stable"``, ``"time_cap"``, ``"max_runs"``, or None to go on.

    ``min_runs`` come first (only ``cap_min_runs`` when the time cap is reached before); then the visit stops as
    soon as the median is stable (RSE <= ``target_rse``), its time is used up, or ``max_runs`` is reached.
    """
    cap = protocol.time_cap_s if time_cap_s is None else time_cap_s
    n = len(samples_s)
    if n < min(protocol.cap_min_runs, protocol.min_runs):
        return None
    if n < protocol.min_runs:
        return "time_cap" if elapsed_s >= cap else None
    if rse_median(samples_s, protocol.rse_method) <= protocol.target_rse:
        return "stable"
    if n >= protocol.max_runs:
        return "max_runs"
    if elapsed_s >= cap:
        return "time_cap"
    return None


def next_chunk(samples_s, elapsed_s: float, protocol: Protocol, time_cap_s: float | None = None) -> int:
    """How many runs to time before checking :func:`stop_reason` again: up to ``cap_min_runs`` first, then
    double the runs so far, but not past the time cap (estimated from the median run) nor ``max_runs``
    (nor ``min_runs`` until it is reached); at least 1."""
    cap = protocol.time_cap_s if time_cap_s is None else time_cap_s
    n = len(samples_s)
    first = min(protocol.cap_min_runs, protocol.min_runs)
    if n < first:
        return first - n
    per_run = max(float(np.median(as_array(samples_s))), 1e-9)
    by_time = int((cap - elapsed_s) / per_run) + 1
    if n < protocol.min_runs:
        return max(1, min(protocol.min_runs - n, by_time))
    return max(1, min(n, by_time, protocol.max_runs - n))


def retest_agreement(first_ms, second_ms) -> dict:
    """Test-retest agreement of two measurements of the same entries (medians in ms).

    Returns the median, p90 and max of ``|second - first| / first`` in percent, and the share within 2 %.
    """
    a, b = as_array(first_ms), as_array(second_ms)
    if a.shape != b.shape:
        raise ValueError("retest: both measurements must cover the same entries")
    d = np.abs(b - a) / np.where(a > 0, a, np.nan) * 100
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"n": 0}
    return {
        "n": int(d.size),
        "median_abs_diff_pct": round(float(np.median(d)), 3),
        "p90_abs_diff_pct": round(float(np.percentile(d, 90)), 3),
        "max_abs_diff_pct": round(float(d.max()), 3),
        "within_2pct": round(float(np.mean(d <= 2.0)), 3),
        "median_signed_diff_pct": round(float(np.median((b - a)[a > 0] / a[a > 0] * 100)), 3),
    }
