"""The profile folder's durable record of measurements in progress.

Each visit of an entry is appended to ``visits.csv`` as it ends (one line, fsync'd); once all of an entry's
visits are in and agree (else after the extra visits the protocol's retake rule asks for), its row is appended to
``ops.csv`` or ``e2e.csv``. Re-opening the journal after a kill knows
exactly which visits and rows exist, so a re-run measures only what is missing and writes every row once.

``visits.csv`` columns: ``entry`` (op | e2e), ``graph`` (the op key, or ``arch:`` + 16 hex digits of the
SHA-1 of the architecture's JSON; ``retest:`` before either for the test-retest measurement), ``batch``, ``seq_len``, ``visit``, the visit's latency percentiles, mean and
sd (ms), ``n_runs`` and why it stopped (``stable``, ``time_cap``, ``max_runs``); under ``protocol.probe`` (not
``none``) also ``probe_ms``, the probe's median beside the visit's runs, and the millisecond fields are the visit at
the profile's reference probe time (:func:`latency.stats.at_reference`: raw = value * probe_ms / reference).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from latency.stats import Protocol, at_reference, combine_visits, wants_retake
from latency.table import (
    E2E_COLUMNS,
    E2E_KEY,
    E2E_KINDS,
    OPS_COLUMNS,
    OPS_KEY,
    OPS_KINDS,
    RowAppender,
    read_rows,
    row_key,
)
from nas.spaces.ops import op_bytes, op_flops

if TYPE_CHECKING:
    from latency.profiler import Job

NUM_LABELS = 2  # the classifier width every profile measures (heads and whole models)
VISIT_COLUMNS = ["entry", "graph", "batch", "seq_len", "visit", "latency_p50_ms", "latency_p10_ms", "latency_p90_ms",
                 "mean_ms", "sd_ms", "n_runs", "stop"]
VISIT_KINDS = {"batch": int, "seq_len": int, "visit": int, "latency_p50_ms": float, "latency_p10_ms": float,
               "latency_p90_ms": float, "mean_ms": float, "sd_ms": float, "n_runs": int, "probe_ms": float}


def visit_columns(protocol: Protocol) -> list[str]:
    """``visits.csv``'s columns under ``protocol`` (``probe_ms`` last where a probe is timed beside each visit)."""
    return VISIT_COLUMNS + (["probe_ms"] if protocol.probe != "none" else [])


def read_visits(path: Path) -> list[dict]:
    """A ``visits.csv``'s rows, with or without the ``probe_ms`` column (what its header says)."""
    import csv

    path = Path(path)
    with_probe = VISIT_COLUMNS + ["probe_ms"]
    header = None
    if path.exists():
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    return read_rows(path, with_probe if header == with_probe else VISIT_COLUMNS, VISIT_KINDS)


def visit_graph(kind: str, graph: str) -> str:
    """An entry's ``graph`` in ``visits.csv``: the op key, or ``arch:`` + 16 hex digits of the SHA-1 of the
    architecture's JSON.

    >>> visit_graph("op", "ffn:inner=512|h=128"), len(visit_graph("e2e", '{"space":"nasbert"}'))
    ('ffn:inner=512|h=128', 21)
    """
    import hashlib

    return graph if kind == "op" else "arch:" + hashlib.sha1(graph.encode()).hexdigest()[:16]


def entry_row(job: Job, visits: list[dict], statistic: str = "median") -> dict:
    """The ops.csv or e2e.csv row of ``job`` from its visits (combined by the protocol's ``statistic``)."""
    s, ctx = combine_visits(visits, statistic), job.ctx
    if job.kind == "op":
        spec = job.spec
        return {"op_key": spec.key, "kind": spec.kind, "hidden": spec.hidden, "batch": ctx.batch,
                "seq_len": ctx.seq_len, **s, "flops": op_flops(spec, ctx), "bytes": op_bytes(spec, ctx)}
    space = job.arch.get_space()
    return {"arch_json": job.arch.key, "space": space.name, "preset": space.preset.name, "split": job.split,
            "batch": ctx.batch, "seq_len": ctx.seq_len, **s, "flops": space.flops(job.arch, ctx, NUM_LABELS),
            "params": space.analytic_params(job.arch, NUM_LABELS)}


class Journal:
    """The folder's durable record: each visit goes to ``visits.csv`` as it ends; an entry's row goes to
    ``ops.csv`` / ``e2e.csv`` once all its visits are in. Re-opening it after a kill resumes exactly."""

    def __init__(self, folder: Path, jobs: list[Job], protocol: Protocol, probe_reference_ms: float | None = None) -> None:
        """``probe_reference_ms``: the profile's reference probe time, to which each new visit is scaled (needed to
        add visits under a protocol with a probe)."""
        self.folder, self.protocol, self.probe_reference_ms = folder, protocol, probe_reference_ms
        self.columns = visit_columns(protocol)
        self.probes_now: list[float] = []  # the probe medians of the visits added by this session
        self.rules = {kind: protocol.for_kind(kind) for kind in ("op", "e2e")}  # visits and retakes per kind
        self.by_key = {j.visit_key: j for j in jobs}
        self.done = {row_key(r, OPS_KEY) for r in read_rows(folder / "ops.csv", OPS_COLUMNS, OPS_KINDS)}
        self.done |= {row_key(r, E2E_KEY) for r in read_rows(folder / "e2e.csv", E2E_COLUMNS, E2E_KINDS)}
        self.visits: dict[tuple, dict[int, dict]] = {}  # visit key -> visit number -> its summary
        for r in read_rows(folder / "visits.csv", self.columns, VISIT_KINDS):
            self.visits.setdefault((r["graph"], r["batch"], r["seq_len"]), {})[r["visit"]] = r

    def extend(self, jobs: list[Job]) -> None:
        """Entries planned after the journal opened (the searched architectures)."""
        self.by_key.update({j.visit_key: j for j in jobs})
        self.finish_complete()

    def visits_of(self, job: Job) -> list[dict]:
        got = self.visits.get(job.visit_key, {})
        return [got[v] for v in sorted(got)]

    def _open(self, job: Job) -> bool:
        """Whether the entry still takes visits: a retest entry until its visits agree, an entry until its row
        is written."""
        if job.retest:
            got, rules = self.visits_of(job), self.rules[job.kind]
            return len(got) < rules.visits or wants_retake([v["latency_p50_ms"] for v in got], rules)
        return job.key not in self.done

    def closed(self, job: Job) -> bool:
        """Whether the entry takes no more visits (its row is written; a retest entry's visits are in and agree)."""
        return not self._open(job)

    def wants(self, job: Job, visit: int) -> bool:
        """Whether ``visit`` of ``job`` is to be measured: a main-round visit not yet taken, or the next extra
        visit of an entry whose visits disagree."""
        got = self.visits.get(job.visit_key, {})
        if visit in got or not self._open(job):
            return False
        return visit < self.rules[job.kind].visits or len(got) == visit

    def __enter__(self) -> Journal:
        self.out = {"op": RowAppender(self.folder / "ops.csv", OPS_COLUMNS),
                    "e2e": RowAppender(self.folder / "e2e.csv", E2E_COLUMNS),
                    "visit": RowAppender(self.folder / "visits.csv", self.columns)}
        return self

    def __exit__(self, *exc) -> None:
        for out in self.out.values():
            out.close()

    def add(self, job: Job, visit: int, s: dict) -> None:
        gid, batch, seq_len = job.visit_key
        if self.protocol.probe != "none":
            if not self.probe_reference_ms or "probe_ms" not in s:
                raise ValueError(f"a visit under protocol.probe {self.protocol.probe!r} needs its probe_ms and the "
                                 f"profile's reference probe time")
            s = at_reference(s, self.probe_reference_ms)
            self.probes_now.append(float(s["probe_ms"]))
        row = {"entry": job.kind, "graph": gid, "batch": batch, "seq_len": seq_len, "visit": visit, **s}
        self.out["visit"].append(row)
        self.visits.setdefault(job.visit_key, {})[visit] = row
        self._finish(job)

    def _finish(self, job: Job) -> None:
        """Write the entry's row once its visits are in and agree (or ``max_visits`` are taken)."""
        got, rules = self.visits_of(job), self.rules[job.kind]
        if job.retest or job.key in self.done or len(got) < rules.visits:
            return
        if wants_retake([v["latency_p50_ms"] for v in got], rules):
            return
        self.out[job.kind].append(entry_row(job, got, self.protocol.statistic))
        self.done.add(job.key)

    def finish_open(self, jobs: list[Job]) -> int:
        """Write the rows of ``jobs`` that have visits but no row yet (a measuring budget, the protocol's
        ``budget_s``, is spent: visits or retakes were skipped), from the visits they have. Returns how many."""
        n = 0
        for job in jobs:
            got = self.visits_of(job)
            if not job.retest and job.key not in self.done and got:
                self.out[job.kind].append(entry_row(job, got, self.protocol.statistic))
                self.done.add(job.key)
                n += 1
        return n

    def finish_complete(self) -> None:
        """Write the rows of entries whose visits all ended before a kill took the row with it."""
        for key in list(self.visits):
            if key in self.by_key:
                self._finish(self.by_key[key])
