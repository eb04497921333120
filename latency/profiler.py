"""``hwnas profile``: every unique op of the chosen spaces at every Context of a grid, plus whole sampled
architectures end to end, into a resumable profile folder (docs/formats.md).

The plan is a fixed list of entries (ops and e2e architectures at each Context). Each op is measured in
``protocol.visits`` visits, each whole model in ``e2e_visits``, one per round; each round goes over all entries in
its own seeded random order, so slow drift of the machine and bursts of load spread over all entries instead of
biasing some, and an entry's median of visit medians outvotes one spoiled visit. Each visit is appended durably to
``visits.csv`` as it ends, and an entry's row to ``ops.csv`` / ``e2e.csv`` once its visits are in
(:class:`Journal`): killing the process at any moment and re-running the same command resumes where it stopped. At the end a seeded sample of entries is measured
again (all visits: test-retest agreement) and each op is set against the roofline.

>>> cfg = ProfileConfig(spaces=(("nasbert", "tiny"),), batch=(1,), seq_len=(16,), e2e=2, search_like=False)
>>> jobs = plan_jobs(cfg)
>>> sum(j.kind == "e2e" for j in jobs), [j.split for j in jobs if j.kind == "e2e"].count("test")
(2, 1)
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import random
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from latency.allocator import apply_allocator
from latency.backends.base import Backend, Runnable, get_backend
from latency.device import fingerprint, gpu_clocks
from latency.journal import NUM_LABELS, VISIT_COLUMNS, VISIT_KINDS, Journal, visit_graph  # noqa: F401
from latency.measure import (  # noqa: F401
    EXPORT_CTX,
    PROBE_QUICK_S,
    PROBE_REFERENCE_S,
    Probe,
    check_context,
    measure_arch,
    measure_runnable,
    probe_reference,
    token_inputs,
    warm_up_fresh,
)
from latency.progress import Progress
from latency.roofline import measure_roofline, roofline_rows, roofline_summary, write_roofline_csv
from latency.stats import PROBES, VISIT_PROCESSES, Protocol, combine_visits, retest_agreement, summarize
from latency.table import (
    E2E_COLUMNS,
    E2E_KEY,
    E2E_KINDS,
    OPS_COLUMNS,
    OPS_KEY,
    OPS_KINDS,
    SCHEMA,
    ProfileError,
    check_compatible,
    check_unique,
    read_meta,
    read_rows,
    write_meta,
)
from nas.spaces.ops import Context, OpSpec, build_op, get_op, op_params

log = logging.getLogger(__name__)

DEFAULT_BATCH, DEFAULT_SEQ_LEN, DEFAULT_E2E = (1, 8, 32), (32, 64, 128, 256), 12
QUICK_BATCH, QUICK_SEQ_LEN, QUICK_E2E = (1, 8), (32, 128), 8
CUDA_BATCH, CUDA_SEQ_LEN = (1, 8, 32, 64), (32, 128, 256)  # a GPU serves batches: 1 to 64 (seq_len 64 lies between
# 32 and 128; 12 Contexts, as on the CPU: on a lent H200 whose speed drifted, the main rounds alone took 11.5 min)
E2E_SESSIONS = ("per_visit", "shared")  # Protocol.e2e_session
LIVE_BYTES = 4 << 30  # weights of the prepared graphs (sessions) kept alive at once; beyond, the least recently
# used is released and re-created from its file when next needed
LIVE_MULTI_THREAD = 24  # with more than one thread at most this many sessions live: each has its own thread pool,
# and idle pools of a hundred live sessions stole the second core from the one measured (visits 30 % apart)


@dataclass
class ProfileConfig:
    """What one ``hwnas profile`` run measures, and how."""

    backend: str = "onnxruntime"  # registered backend name
    device: str = "cpu"  # cpu | cuda
    threads: int = 1  # fixed intra-op threads
    spaces: tuple[tuple[str, str | None], ...] = (("adabert", None), ("nasbert", None))  # (space, preset or default)
    batch: tuple[int, ...] = DEFAULT_BATCH  # the Context grid: batch sizes ...
    seq_len: tuple[int, ...] = DEFAULT_SEQ_LEN  # ... times sequence lengths
    e2e: int = DEFAULT_E2E  # sampled whole architectures per space (half calibration, half test)
    seed: int = 0  # order of measurement, e2e sampling, retest sample, weights and inputs
    protocol: Protocol = field(default_factory=Protocol)  # the repeats rule
    quick: bool = False  # the reduced --quick grid and protocol
    search_like: bool = True  # also measure homogeneous, extreme and latency-searched architectures whole
    search_fractions: tuple[float, ...] | None = None  # budgets of those searches (None: SEARCH_FRACTIONS)
    homogeneous: bool | None = None  # the homogeneous ones alone (None: with search_like)
    homogeneous_depths: int = 2  # AdaBERT's homogeneous architectures at the most cells (1) and the middle (2):
    # each op kind then has one in each split
    split: str = "alternate"  # e2e rows: "alternate" calibration / test, or all "calibration" (a transfer profile)
    transfer_from: dict | None = None  # {name, hash} of the profile a --transfer-from measurement adapts
    e2e_contexts: tuple[tuple[int, int], ...] | None = None  # whole models at these (batch, seq_len) only (None:
    # the grid's; a transfer measurement times them at four Contexts only)

    def contexts(self) -> list[Context]:
        return [Context(b, s) for b in self.batch for s in self.seq_len]

    def e2e_ctxs(self) -> list[Context]:
        """The Contexts whole architectures are measured at."""
        return [Context(b, s) for b, s in self.e2e_contexts] if self.e2e_contexts else self.contexts()

    def load_spaces(self) -> list:
        from nas.spaces import get_space

        return [get_space(name, preset) for name, preset in self.spaces]


@dataclass(frozen=True)
class Job:
    """One entry to measure: an op or a whole architecture at one Context."""

    kind: str  # "op" | "e2e"
    graph: str  # op key or arch key: the prepared graph it runs
    ctx: Context
    spec: OpSpec | None = None
    arch: object | None = None  # nas.arch.Architecture for e2e jobs
    split: str | None = None  # calibration | test for e2e jobs
    label: str = ""
    retest: bool = False  # the second, independent measurement of a sampled entry (test-retest)

    @property
    def key(self) -> tuple:
        """The entry's key in ops.csv / e2e.csv."""
        return (self.graph, self.ctx.batch, self.ctx.seq_len)

    @property
    def visit_key(self) -> tuple:
        """The entry's key in visits.csv: an architecture is named by a short hash of its JSON; a retest
        measurement by ``retest:`` + its entry's name."""
        gid = visit_graph(self.kind, self.graph)
        return ("retest:" + gid if self.retest else gid, self.ctx.batch, self.ctx.seq_len)


def sample_archs(space, n: int, seed: int) -> list:
    """``n`` distinct architectures of ``space``, the same for the same seed."""
    rng = random.Random(f"hwnas-e2e:{space.name}:{space.preset.name}:{seed}")
    archs, seen = [], set()
    for _ in range(50 * n):
        if len(archs) == n:
            break
        a = space.sample(rng)
        if a.key not in seen:
            seen.add(a.key)
            archs.append(a)
    return archs


def _splits(n: int, mode: str) -> list[str]:
    return ["calibration" if mode == "calibration" or i % 2 == 0 else "test" for i in range(n)]


def arch_jobs(archs: list, ctxs: list[Context], label: str, split: str, seen: set[str]) -> list[Job]:
    """e2e jobs of ``archs`` at every Context (splits alternate within the set, starting with calibration);
    architectures already in ``seen`` are skipped."""
    archs = [a for a in archs if a.key not in seen]
    seen.update(a.key for a in archs)
    return [Job("e2e", a.key, c, arch=a, split=sp, label=f"{a.space}#{label}{i}")
            for i, (a, sp) in enumerate(zip(archs, _splits(len(archs), split))) for c in ctxs]


def plan_jobs(cfg: ProfileConfig) -> list[Job]:
    """Every entry measured before the searched architectures, in its measurement order (seeded shuffle): the
    ops, the sampled architectures and (``search_like``) the homogeneous ones."""
    from latency.archsets import homogeneous_archs

    spaces, ctxs = cfg.load_spaces(), cfg.e2e_ctxs()
    for space in spaces:
        for ctx in {*cfg.contexts(), *ctxs}:
            check_context(space, ctx)
    specs = sorted({s for space in spaces for s in space.unique_ops(num_labels=NUM_LABELS)}, key=lambda s: s.key)
    jobs = [Job("op", s.key, c, spec=s, label=s.key) for s in specs for c in cfg.contexts()]
    for space in spaces:
        seen: set[str] = set()
        jobs += arch_jobs(sample_archs(space, cfg.e2e, cfg.seed), ctxs, "", cfg.split, seen)
        if cfg.search_like if cfg.homogeneous is None else cfg.homogeneous:
            jobs += arch_jobs(homogeneous_archs(space, cfg.homogeneous_depths), ctxs, "homogeneous", cfg.split,
                              seen)
    return _shuffled(jobs, cfg.seed)


def _shuffled(jobs: list[Job], seed) -> list[Job]:
    jobs = sorted(jobs, key=lambda j: (j.kind, j.key))
    random.Random(seed).shuffle(jobs)
    return jobs


def reference_context(cfg: ProfileConfig) -> Context:
    """The Context latency-only searches aim their budgets at: batch 1 and seq_len 128 where the grid has them,
    else the grid's middle."""
    b = 1 if 1 in cfg.batch else sorted(cfg.batch)[len(cfg.batch) // 2]
    s = 128 if 128 in cfg.seq_len else sorted(cfg.seq_len)[len(cfg.seq_len) // 2]
    return Context(b, s)


def derive_archs(cfg: ProfileConfig, folder: Path, meta: dict) -> dict:
    """The architectures searches return on this device, from its own op table (the plain lookup table at the
    reference Context): the fastest and slowest, and latency-only searches at ``SEARCH_FRACTIONS`` of the
    range. Stored in ``profile.json`` (``derived_archs``) so that a resumed run measures the same ones."""
    import pandas as pd

    from latency.archsets import SEARCH_FRACTIONS, extreme_archs, searched_archs
    from latency.predictor import fit
    from latency.profile_data import ProfileData

    fractions = cfg.search_fractions or SEARCH_FRACTIONS
    t0 = time.perf_counter()
    ops = pd.DataFrame(read_rows(folder / "ops.csv", OPS_COLUMNS, OPS_KINDS))
    pred = fit(ProfileData(folder, meta, ops, None), "lut")
    ref = reference_context(cfg)
    archs = {}
    for space in cfg.load_spaces():
        cost = pred.cost_matrix(space, ref)
        found = searched_archs(space, cost, fractions, seed=cfg.seed)
        archs[space.name] = [a.to_dict() for a in extreme_archs(space, cost) + found]
    return {"reference": [ref.batch, ref.seq_len], "predictor": "lut (this profile's op table)",
            "search": "latency-only, capacity = parameters, budgets at " + ", ".join(
                f"{f:g}" for f in fractions) + " of the way from the fastest architecture to the capacity "
            "optimum", "archs": archs,
            "search_s": round(time.perf_counter() - t0, 1)}


def derived_jobs(cfg: ProfileConfig, derived: dict, planned: list[Job]) -> list[Job]:
    from nas.arch import Architecture

    ctxs, out = cfg.e2e_ctxs(), []
    for space in cfg.load_spaces():
        seen = {j.graph for j in planned if j.kind == "e2e" and j.arch.space == space.name}
        archs = [Architecture.from_dict(d, "profile.json derived_archs") for d in derived["archs"].get(space.name, [])]
        out += arch_jobs(archs, ctxs, "searched", cfg.split, seen)
    return _shuffled(out, f"{cfg.seed}:derived")


def new_meta(cfg: ProfileConfig, backend: Backend) -> dict:
    from nas import __version__

    spaces = cfg.load_spaces()
    return {
        "schema": SCHEMA, "tool_version": __version__, "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "status": "running", "device": fingerprint(threads=cfg.threads), "backend": backend.info(),
        "protocol": cfg.protocol.to_dict(), "grid": {"batch": list(cfg.batch), "seq_len": list(cfg.seq_len)},
        "spaces": [{"name": s.name, "preset": s.preset.name, "version": s.version, "num_labels": NUM_LABELS}
                   for s in spaces],
        "e2e": {"per_space": cfg.e2e, "seed": cfg.seed,
                "split": ("all calibration" if cfg.split == "calibration" else
                          "alternate within each set: calibration, test, calibration, ..."),
                "search_like": cfg.search_like, "homogeneous": cfg.homogeneous,
                "homogeneous_depths": cfg.homogeneous_depths,
                **({"contexts": [list(c) for c in cfg.e2e_contexts]} if cfg.e2e_contexts else {})},
        "quick": cfg.quick, "roofline": None, "retest": None, "sessions": [], "transfer_from": cfg.transfer_from,
    }


class Graphs:
    """Prepared graphs by key; beyond :data:`LIVE_BYTES` of live weights, the least recently used is released (its
    exported file stays, so bringing it back costs a session, not an export). A small default grid keeps every
    graph alive, so each is prepared once. With ``e2e_session="per_visit"`` a whole model's session is released
    before each of its visits and re-created by the bind (tens of milliseconds with onnxruntime): every visit then
    runs in a session that has run only its own Context."""

    def __init__(self, backend: Backend, seed: int, e2e_session: str = "per_visit") -> None:
        if e2e_session not in E2E_SESSIONS:
            raise ProfileError(f"protocol.e2e_session {e2e_session!r} is none of {', '.join(E2E_SESSIONS)}; the "
                               "profile.json is corrupt or from a newer hwnas")
        self.backend, self.seed = backend, seed
        self.renew_e2e = e2e_session == "per_visit"  # a new session for every whole-model visit
        self.prepared: dict[str, Runnable] = {}
        self.alive: OrderedDict[str, int] = OrderedDict()  # graph -> bytes of weights
        self.max_alive = LIVE_MULTI_THREAD if backend.threads > 1 else None
        self.fresh = False  # whether the last bound() prepared (exported) its graph for the first time
        self._probe: Probe | None = None

    def probe(self, protocol: Protocol) -> Probe | None:
        """The :class:`~latency.measure.Probe` timed beside each visit (None with ``protocol.probe == "none"``)."""
        if protocol.probe == "none":
            return None
        if self._probe is None:
            self._probe = Probe(self.backend.threads)
        return self._probe

    def inputs(self, job: Job, ctx: Context) -> dict[str, torch.Tensor]:
        if job.kind == "e2e":
            return token_inputs(job.arch.get_space(), ctx, seed=self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        return get_op(job.spec.kind).example_inputs(job.spec, ctx, gen)

    def bound(self, job: Job) -> Runnable:
        """The job's graph, bound to its Context's inputs."""
        r = self.prepared.get(job.graph)
        self.fresh = r is None
        if r is None:
            if job.kind == "e2e":
                r = self.backend.prepare_arch(job.arch, self.inputs(job, EXPORT_CTX), NUM_LABELS, seed=self.seed)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    module = build_op(job.spec)
                r = self.backend.prepare(module, self.inputs(job, EXPORT_CTX))
            self.prepared[job.graph] = r
        elif job.kind == "e2e" and self.renew_e2e:
            r.release()  # bind() below opens a new session, which runs no other Context than this visit's
        if job.graph not in self.alive:
            self.alive[job.graph] = 4 * (job.arch.get_space().analytic_params(job.arch, NUM_LABELS)
                                         if job.kind == "e2e" else op_params(job.spec))
        self.alive.move_to_end(job.graph)
        while len(self.alive) > 1 and (sum(self.alive.values()) > LIVE_BYTES or
                                       (self.max_alive and len(self.alive) > self.max_alive)):
            old, _ = self.alive.popitem(last=False)
            self.prepared[old].release()
        self.backend.bind(r, self.inputs(job, job.ctx))
        return r


def measure_visit(graphs: Graphs, job: Job, protocol: Protocol, fresh_warmup: bool = True) -> dict:
    """One visit of ``job``: :func:`latency.stats.summarize` of its timings plus the stop reason. ``fresh_warmup``:
    a graph prepared for this visit first runs ``protocol.fresh_warmup_s`` untimed (off in a round's own process,
    :class:`RoundProcess`)."""
    t0 = time.perf_counter()
    runnable = graphs.bound(job)
    if graphs.fresh and fresh_warmup:
        warm_up_fresh(graphs.backend, runnable, protocol)
    t1 = time.perf_counter()
    probe, probe_s = graphs.probe(protocol), []
    samples, reason = measure_runnable(graphs.backend, runnable, protocol.for_kind(job.kind), probe=probe,
                                       probe_s=probe_s)
    s = {**summarize(samples, protocol.rse_method), "stop": reason}
    if probe is not None:
        s["probe_ms"] = round(statistics.median(probe_s) * 1e3, 6)  # raw: the journal scales the visit by it
    log.debug("%s %s %s: prepare %.3f s, measure %.3f s, %d runs, %s, p50 %.4f ms, cv %.3f", job.kind, job.label,
              job.ctx, t1 - t0, time.perf_counter() - t1, len(samples), reason, s["latency_p50_ms"], s["cv"])
    return s


def _round_worker(conn, backend: str, threads: int, device: str, seed: int, e2e_session: str, allocator: str,
                  workdir: str | None) -> None:
    """A round's own process (:class:`RoundProcess`): set the allocator first, then take ``(job, protocol)`` off
    ``conn`` and answer each with ``(True, visit summary)`` or ``(False, "what failed")``; ``None`` ends it."""
    apply_allocator(allocator)
    with get_backend(backend, threads=threads, device=device) as b:
        if workdir:
            b.use_workdir(Path(workdir))
        b.settle()
        graphs = Graphs(b, seed, e2e_session)
        while (msg := conn.recv()) is not None:
            job, protocol = msg
            try:
                conn.send((True, measure_visit(graphs, job, protocol, fresh_warmup=False)))
            except Exception as e:  # noqa: BLE001 - sent back and raised in the profile's process
                conn.send((False, f"{type(e).__name__}: {e}"))


class RoundProcess:
    """``Protocol.visit_processes == "per_round"``: each round of visits in a fresh process of its own (started when
    the visit index changes, ended before the next), so an entry's visits sample as many processes. Eager torch
    draws a speed per process and convolution shape (up to 1.85x for one convolution; whole AdaBERT models a median
    3 % apart between processes: ``benchmarks/process_states.py``); within one process every visit shares the draw.
    No fresh-graph warm-up there: in fresh torch processes a first visit with the per-visit warm-up only read 0.999x
    (ops) / 0.992x (whole models) the later ones (README, *Per-process states*)."""

    def __init__(self, cfg: ProfileConfig, workdir: Path | None) -> None:
        self.args = (cfg.backend, cfg.threads, cfg.device, cfg.seed, cfg.protocol.e2e_session,
                     cfg.protocol.allocator, str(workdir) if workdir else None)
        self.round: int | None = None
        self.proc = self.conn = None
        self.started = 0  # processes started so far

    def visit(self, job: Job, visit: int, protocol: Protocol) -> dict:
        if visit != self.round or self.proc is None:
            self.close()
            self._start()
            self.round = visit
        self.conn.send((job, protocol))
        try:
            ok, payload = self.conn.recv()
        except EOFError:
            self.close()
            raise ProfileError(f"the process measuring round {visit + 1} ended unexpectedly at {job.label} "
                               f"{job.ctx}; resume with the same `hwnas profile` command") from None
        if not ok:
            raise ProfileError(f"measuring {job.label} {job.ctx} in round {visit + 1}'s process failed: {payload}")
        return payload

    def _start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a new interpreter: nothing of this process's state (heap, oneDNN) carried
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_round_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        self.started += 1

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()
        self.proc = self.conn = None


def rounds(jobs: list[Job], protocol: Protocol, first: int = 0, last: int | None = None) -> list[tuple[int, Job]]:
    """(visit, job) for rounds ``first`` to ``last`` (default: the main rounds), each over every entry in its own
    seeded order; :meth:`Journal.wants` picks the visits still to take (ops ``visits``, whole models
    ``e2e_visits``, then retakes)."""
    out = []
    for v in range(first, max_main_visits(protocol) if last is None else last):
        order = list(jobs)
        if v:
            random.Random(f"{protocol.seed}:visit{v}").shuffle(order)
        out += [(v, j) for j in order]
    return out


def max_main_visits(protocol: Protocol) -> int:
    """The number of main rounds: the larger of the op and the whole-model visits."""
    return max(protocol.for_kind(k).visits for k in ("op", "e2e"))


class ClockLog:
    """On a GPU: every ``interval`` seconds of measuring, nvidia-smi's clocks, temperature and power and the host's
    load average, appended to ``clocks.csv`` with the visits taken so far, so that a drift in the rows can be told
    apart: a GPU that slowed (clocks down) from a host that dispatches slower (clocks steady, eager runs being
    launch-bound). Off (no file) on a CPU or where nvidia-smi is missing."""

    COLUMNS = ["time", "visits", "sm_mhz", "mem_mhz", "temperature_c", "power_w", "loadavg_1m"]

    def __init__(self, folder: Path, enabled: bool, interval_s: float = 15.0) -> None:
        self.folder, self.enabled, self.interval_s = folder, enabled, interval_s
        self.last = -float("inf")

    def tick(self, visits: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < self.interval_s:
            return
        self.last = now
        clocks = gpu_clocks()
        if clocks is None:
            self.enabled = False
            return
        from latency.table import RowAppender

        row = {"time": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "visits": visits,
               **{k: clocks.get(k) for k in ("sm_mhz", "mem_mhz", "temperature_c", "power_w")},
               "loadavg_1m": (_loadavg() or [None])[0]}
        with RowAppender(self.folder / "clocks.csv", self.COLUMNS) as out:
            out.append(row)


def measure_jobs(journal: Journal, graphs: Graphs, jobs: list[Job], protocol: Protocol, bar: Progress,
                 session: dict, clock_log: ClockLog | None = None, started: float | None = None,
                 round_process: RoundProcess | None = None) -> None:
    """Every visit ``jobs`` still lack: the main rounds, then extra rounds for entries whose visits disagree
    (:func:`latency.stats.wants_retake`), until none does or ``max_visits`` is reached.

    With a measuring budget (``protocol.budget_s``; ``started``: the session's ``time.perf_counter()`` at its
    start) the session ends that long after it began: a whole model's main-round visits are always taken (a
    calibration rests on them) and the time they still need is held back (the mean of the last whole-model visits
    times those left); an op visit or a retake that would eat into it is skipped. Then every entry with visits but
    no row gets its row from the visits it has, and an entry with none gets no row (``session["budget"]``:
    how many of each). With ``round_process`` each round's visits run in a process of its own."""
    deadline = None if protocol.budget_s is None or started is None else started + protocol.budget_s
    e2e_main = protocol.for_kind("e2e").visits
    e2e_left = sum(j.kind == "e2e" and w < e2e_main and journal.wants(j, w) for w, j in rounds(jobs, protocol))
    e2e_s: list[float] = []  # the durations of the whole-model visits so far
    seconds = session.setdefault("seconds", {})  # visits' wall seconds per kind of entry (prepare, warm up, time)
    skipped = 0

    def measure(todo: list[tuple[int, Job]]) -> None:
        nonlocal e2e_left, skipped
        bar.add(len(todo))
        for w, job in todo:
            needed = job.kind == "e2e" and w < e2e_main
            if deadline is not None and not needed:
                recent = e2e_s[-BUDGET_WINDOW:]
                held = e2e_left * (sum(recent) / len(recent) if recent else 0.0)
                if time.perf_counter() + held >= deadline:
                    skipped += 1
                    bar.advance()
                    continue
            bar.show(f"{'retest ' if job.retest else ''}{job.label} {job.ctx} (visit {w + 1})")
            t0 = time.perf_counter()
            journal.add(job, w, round_process.visit(job, w, protocol) if round_process is not None
                        else measure_visit(graphs, job, protocol))
            took = time.perf_counter() - t0
            seconds[job.kind] = seconds.get(job.kind, 0.0) + took
            if needed:
                e2e_left -= 1
                e2e_s.append(took)
            session["visits_measured"] += 1
            if clock_log is not None:
                clock_log.tick(session["visits_measured"])
            bar.advance()

    measure([(v, j) for v, j in rounds(jobs, protocol) if journal.wants(j, v)])
    first_extra = min(protocol.for_kind(k).visits for k in ("op", "e2e"))
    for v in range(first_extra, max(max_main_visits(protocol), protocol.max_visits)):
        measure([(w, j) for w, j in rounds(jobs, protocol, v, v + 1) if journal.wants(j, w)])
    session["seconds"] = {k: round(x, 1) for k, x in seconds.items()}  # summed unrounded (op visits: ~0.1 s)
    if deadline is not None:
        cut = session.setdefault("budget", {"visits_skipped": 0, "rows_from_fewer_visits": 0, "entries_unmeasured": 0})
        cut["visits_skipped"] += skipped
        cut["rows_from_fewer_visits"] += journal.finish_open(jobs)
        cut["entries_unmeasured"] += sum(not j.retest and not journal.visits_of(j) for j in jobs)


BUDGET_WINDOW = 20  # whole-model visits whose mean duration prices those still to come under a measuring budget


def _lock(folder: Path):
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProfileError(f"{folder}: another `hwnas profile` is writing to this folder; wait for it to finish "
                           "or choose another --out") from None
    return fd


def open_folder(out: Path, meta: dict, force_new: bool) -> tuple[Path, dict | None]:
    """The folder to write and its stored metadata (None for a new folder); refuses a foreign one."""
    candidate = out
    for i in range(2, 1000):
        if not candidate.exists() or not any(candidate.iterdir()):
            return candidate, None
        try:
            stored = read_meta(candidate)
            if stored.get("merged_from"):
                raise ProfileError(f"{candidate} merges {len(stored['merged_from'])} profiles (`hwnas merge-profiles`) "
                                   f"and is not resumed or extended; profile into another --out, then merge again")
            check_compatible(candidate, stored, meta)
            return candidate, stored
        except ProfileError:
            if not force_new:
                raise
        candidate = out.with_name(f"{out.name}-{i}")
    raise ProfileError(f"{out}: too many folders {out.name}-N; choose another --out")  # pragma: no cover


def run_profile(cfg: ProfileConfig, out: str | os.PathLike, force_new: bool = False, progress: bool = False) -> dict:
    """Measure (or resume) the profile ``cfg`` into folder ``out``.

    Args:
        cfg: what to measure.
        out: the profile folder; resumed when it holds the same setup.
        force_new: when ``out`` holds another setup, write to ``out-2`` (``-3``...) instead of refusing.
        progress: show a progress bar (stderr).
    Returns:
        A summary: the folder, rows, entries measured by this call, wall time, median CV, retest, roofline.
    """
    t_start = time.perf_counter()
    if cfg.protocol.visit_processes not in VISIT_PROCESSES:
        raise ProfileError(f"protocol.visit_processes {cfg.protocol.visit_processes!r} is none of "
                           f"{', '.join(VISIT_PROCESSES)}; the profile.json is corrupt or from a newer hwnas")
    if cfg.protocol.probe not in PROBES:
        raise ProfileError(f"protocol.probe {cfg.protocol.probe!r} is none of {', '.join(PROBES)}; the "
                           f"profile.json is corrupt or from a newer hwnas")
    if cfg.protocol.probe != "none" and cfg.device == "cuda":
        raise ProfileError("--probe matmul times a CPU workload beside each visit, which says nothing of a GPU's "
                           "clocks; profile a GPU with --probe none (its default)")
    jobs = plan_jobs(cfg)
    with get_backend(cfg.backend, threads=cfg.threads, device=cfg.device) as backend:
        meta = new_meta(cfg, backend)
        folder, stored = open_folder(Path(out), meta, force_new)
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
        try:
            backend.use_workdir(folder / ".work")  # exported graphs; cleared by the next run after a kill
            meta = stored or meta
            session = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "visits_measured": 0,
                       "loadavg_start": _loadavg(), "cpu_affinity": fingerprint(cfg.threads)["cpu_affinity"],
                       "allocator": apply_allocator(cfg.protocol.allocator)}
            if cfg.device == "cuda":
                session["gpu_clocks_start"] = gpu_clocks()
            meta["status"], meta["sessions"] = "running", [*meta.get("sessions", []), session]
            write_meta(folder, meta)
            session["settle"] = backend.settle()
            write_meta(folder, meta)
            if not meta.get("roofline"):
                quick = Protocol(min_runs=5, time_cap_s=0.1, target_rse=0.005) if cfg.quick else None
                meta["roofline"] = measure_roofline(backend, quick)
                write_meta(folder, meta)
            if cfg.protocol.probe != "none":
                now = Probe(cfg.threads).reference(PROBE_QUICK_S if cfg.quick else PROBE_REFERENCE_S)
                if not meta.get("probe"):  # the first session's sets the speed every row is scaled to
                    meta["probe"] = {**now, "measured": session["started"]}
                session["probe_ms"] = now["reference_ms"]
                write_meta(folder, meta)
            retest = [] if meta.get("retest") else retest_sample(jobs, cfg.protocol)
            derived = meta.get("derived_archs")
            later = derived_jobs(cfg, derived, jobs) if derived else []
            reference = probe_reference(meta)  # None without a probe
            journal = Journal(folder, jobs + retest + later, cfg.protocol, reference)
            graphs = Graphs(backend, cfg.seed, cfg.protocol.e2e_session)
            per_round = RoundProcess(cfg, folder / ".work") if cfg.protocol.visit_processes == "per_round" else None
            clock_log = ClockLog(folder, enabled=cfg.device == "cuda")
            bar = Progress(0, enabled=progress)
            try:
                with journal:
                    journal.finish_complete()
                    measure_jobs(journal, graphs, _shuffled(jobs + retest, cfg.seed) if retest else jobs,
                                 cfg.protocol, bar, session, clock_log, t_start, per_round)
                    if cfg.search_like and not derived:
                        meta["derived_archs"] = derived = derive_archs(cfg, folder, meta)
                        write_meta(folder, meta)
                        later = derived_jobs(cfg, derived, jobs)
                        journal.extend(later)
                    measure_jobs(journal, graphs, later, cfg.protocol, bar, session, clock_log, t_start, per_round)
            finally:
                if per_round is not None:
                    per_round.close()
                    session["round_processes"] = per_round.started
            if journal.probes_now:  # how fast the machine ran this session, against the profile's reference
                session["probe_vs_reference"] = round(statistics.median(journal.probes_now) / reference, 4)
            ops, e2e = read_tables(folder)
            if retest:
                rows = entry_keys(ops + e2e)
                both = [j for j in retest if journal.visits_of(j) and j.key in rows]  # a budget may skip some
                meta["retest"] = {**retest_result(journal, both, ops + e2e), "entries_planned": len(retest)}
            bar.close()
            write_roofline(folder, meta, ops)
            session["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
            session["loadavg_end"] = _loadavg()
            if cfg.device == "cuda":
                session["gpu_clocks_end"] = gpu_clocks()
            session["wall_s"] = round(time.perf_counter() - t_start, 1)
            meta["status"] = "complete"
            meta.pop("partial", None)
            write_meta(folder, meta)
            (folder / ".lock").unlink(missing_ok=True)
        finally:
            os.close(lock)
    return summary(folder, meta, ops, e2e, session)


def read_tables(folder: Path) -> tuple[list[dict], list[dict]]:
    """The folder's ``ops.csv`` and ``e2e.csv`` rows, each entry once (else a :class:`ProfileError`)."""
    ops = read_rows(folder / "ops.csv", OPS_COLUMNS, OPS_KINDS)
    e2e = read_rows(folder / "e2e.csv", E2E_COLUMNS, E2E_KINDS)
    check_unique(folder / "ops.csv", ops, OPS_KEY)
    check_unique(folder / "e2e.csv", e2e, E2E_KEY)
    return ops, e2e


def write_roofline(folder: Path, meta: dict, ops: list[dict]) -> None:
    """Every op row against the measured roofline: ``roofline.csv`` and ``meta["roofline"]["summary"]``."""
    rows = roofline_rows(ops, meta["roofline"])
    write_roofline_csv(folder / "roofline.csv", rows)
    meta["roofline"]["summary"] = roofline_summary(rows)


def config_from_meta(meta: dict) -> ProfileConfig:
    """The :class:`ProfileConfig` a profile folder was measured under (from its ``profile.json``)."""
    e2e, b = meta.get("e2e") or {}, meta["backend"]
    return ProfileConfig(
        backend=b["name"], device=b.get("device", "cpu"), threads=int(b["threads"]),
        spaces=tuple((s["name"], s["preset"]) for s in meta["spaces"]), batch=tuple(meta["grid"]["batch"]),
        seq_len=tuple(meta["grid"]["seq_len"]), e2e=int(e2e.get("per_space", DEFAULT_E2E)),
        seed=int(e2e.get("seed", 0)), protocol=Protocol.from_dict(meta["protocol"]), quick=bool(meta.get("quick")),
        search_like=bool(e2e.get("search_like", True)), homogeneous=e2e.get("homogeneous"),
        homogeneous_depths=int(e2e.get("homogeneous_depths", 1)),
        split="calibration" if str(e2e.get("split", "")).startswith("all calibration") else "alternate",
        transfer_from=meta.get("transfer_from"),
        e2e_contexts=tuple(tuple(c) for c in e2e["contexts"]) if e2e.get("contexts") else None)


def close_partial(out: str | os.PathLike, why: str) -> dict:
    """Close an interrupted profile whose device is gone (a lent GPU given back): from what was measured, write
    its test-retest agreement (the retest entries whose visits are all in), its roofline rows and summary, and
    ``status: "partial"`` with what is missing and ``why``. Nothing is measured, so it runs anywhere; the same
    ``hwnas profile`` command on the profile's own device still resumes it and completes it."""
    folder = Path(out)
    meta = read_meta(folder)
    if meta.get("status") == "complete":
        raise ProfileError(f"{folder} is complete; nothing to close")
    if not why.strip():
        raise ProfileError("--close-partial needs a reason, e.g. --close-partial 'the GPU lease ended'")
    cfg = config_from_meta(meta)
    jobs = plan_jobs(cfg)
    retest = retest_sample(jobs, cfg.protocol)
    derived = meta.get("derived_archs")
    later = derived_jobs(cfg, derived, jobs) if derived else []
    journal = Journal(folder, jobs + retest + later, cfg.protocol)
    ops, e2e = read_tables(folder)
    done_keys = entry_keys(ops + e2e)
    closed = [j for j in retest if journal.closed(j) and j.key in done_keys]
    if closed and not meta.get("retest"):
        meta["retest"] = {**retest_result(journal, closed, ops + e2e), "entries_planned": len(retest)}
    if meta.get("roofline"):
        write_roofline(folder, meta, ops)
    missing = {"op_entries": sum(j.kind == "op" and j.key not in done_keys for j in jobs),
               "e2e_entries": sum(j.kind == "e2e" and j.key not in done_keys for j in jobs + later),
               "retest_entries": len(retest) - len(closed),
               "searched_architectures": ("not searched yet (fastest, slowest and latency-only searches on this "
                                          "profile's op table come after the main rounds)"
                                          if cfg.search_like and not derived else None)}
    meta["status"] = "partial"
    meta["partial"] = {"closed": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "why": why,
                       "missing": missing, "resume": "run the same `hwnas profile` command on the profile's device"}
    write_meta(folder, meta)
    (folder / ".lock").unlink(missing_ok=True)
    return summary(folder, meta, ops, e2e, {"visits_measured": 0})


def retest_sample(jobs: list[Job], protocol: Protocol) -> list[Job]:
    """A seeded sample of entries to measure a second time, as separate entries (:attr:`Job.retest`) whose
    visits share the main rounds."""
    k = min(len(jobs), max(protocol.retest_min, round(protocol.retest_fraction * len(jobs))))
    return [replace(j, retest=True) for j in random.Random(protocol.seed + 1).sample(jobs, k)]


def entry_keys(rows: list[dict]) -> dict[tuple, float]:
    """Table rows (ops and e2e) by their entry's key (:attr:`Job.key`) -> the row's latency."""
    return {(r.get("op_key") or r["arch_json"], r["batch"], r["seq_len"]): r["latency_p50_ms"] for r in rows}


def retest_result(journal: Journal, jobs: list[Job], rows: list[dict]) -> dict:
    """Agreement of the retest measurements with the stored rows of the same entries."""
    if not jobs:
        return {"n": 0, "by_kind": {}, "entries": []}
    first = entry_keys(rows)
    second = {j.key: combine_visits(journal.visits_of(j), journal.protocol.statistic)["latency_p50_ms"] for j in jobs}
    by_kind = {}
    for kind in ("op", "e2e"):
        ks = [j.key for j in jobs if j.kind == kind]
        if ks:
            agreement = retest_agreement([first[k] for k in ks], [second[k] for k in ks])
            by_kind[kind] = {k: agreement.get(k) for k in ("n", "median_abs_diff_pct", "median_signed_diff_pct")}
    entries = [{"entry": f"{j.label} {j.ctx}", "first_ms": first[j.key], "second_ms": second[j.key]} for j in jobs]
    return {**retest_agreement([first[j.key] for j in jobs], [second[j.key] for j in jobs]), "by_kind": by_kind,
            "when": "interleaved: each sampled entry measured again as a separate entry in the same rounds "
                    "(same visits and retake rules)", "entries": entries}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not available
        return None


def summary(folder: Path, meta: dict, ops: list[dict], e2e: list[dict], session: dict) -> dict:
    import numpy as np

    cvs = [r["cv"] for r in ops + e2e]
    retest = {k: v for k, v in (meta.get("retest") or {}).items() if k != "entries"}
    roof = meta["roofline"]
    return {
        "out": str(folder), "status": meta["status"], "ops_rows": len(ops), "e2e_rows": len(e2e),
        "visits_measured_now": session["visits_measured"], "wall_s": session.get("wall_s"),
        "seconds_by_entry": session.get("seconds"),
        **({"budget": {"budget_s": meta["protocol"].get("budget_s"), **session["budget"]}}
           if session.get("budget") else {}),
        "median_cv": round(float(np.median(cvs)), 4) if cvs else None, "retest": retest,
        "peak_gflops": roof["peak_gflops"], "bandwidth_gbs": roof["bandwidth_gbs"],
        "roofline": roof.get("summary", {}),
        **({"missing": meta["partial"]["missing"]} if meta.get("partial") else {}),
    }
