"""Page faults and eager torch whole-model latency -> results/page_faults.json.

Eager torch allocates every activation afresh. glibc's malloc serves a block above its mmap threshold with fresh
pages from the OS (each page faulted in on first touch) and gives it back on free; the threshold grows with the
blocks freed so far (up to 32 MB), and the heap's top is handed back above twice that. So whether a model's runs
fault depends on what the process allocated before, and the same architecture at the same Context can run fault-
free in one process and take thousands of faults per run in another.

This benchmark re-measures a profile's ``test``-split whole models in one process, in shuffled rounds, as the
profiler measures them (:func:`latency.measure.measure_in_rounds`, the profile's protocol), and counts the minor
page faults per timed run of each. Then, per space and per fault band (none: < 1 per run; some; heavy: at least
:data:`latency.measure.FAULT_WARN_PER_RUN`), it compares the re-measurement with the profile's row and with the
profile's saved predictor. ``--modes`` repeats it in processes with other glibc malloc settings
(``GLIBC_TUNABLES``): ``pinned`` (the mmap threshold at its most, 32 MB, and no trimming: no faults below 32 MB)
and ``no_mmap`` (no block from mmap at all, and no trimming: no faults once the heap has grown; what the protocol's
``allocator="no_mmap"`` sets with ``mallopt`` since 2026-12-05). Each mode measures with the protocol's allocator
left at ``default``, so that the environment alone decides.

Nothing else may run on the machine meanwhile. Run: ``python benchmarks/page_faults.py [PROFILE]
[--spaces adabert,nasbert] [--modes default,pinned,no_mmap]``; ``--markdown`` prints the README table of ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.measure import FAULT_WARN_PER_RUN  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "page_faults.json"
PROFILE = "profiles/amd-epyc-f26m2-2c_torch-2.13_t1"
PINNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"  # 32 MB (glibc's most), 4 GB
NO_MMAP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"  # every block from the heap, kept
BANDS = {"none": (0.0, 1.0), "some": (1.0, float(FAULT_WARN_PER_RUN)), "heavy": (float(FAULT_WARN_PER_RUN), np.inf)}


def worker(profile: str, spaces: list[str], out: str) -> None:
    """Re-measure the test rows of ``spaces`` in this process; write one dict per row to ``out``."""
    from latency.backends.base import get_backend
    from latency.measure import EXPORT_CTX, measure_in_rounds, token_inputs
    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from latency.stats import Protocol
    from nas.arch import Architecture
    from nas.spaces.ops import Context

    prof = read_profile(profile)
    pred = load_predictor(prof.path / "predictor.json", prof)
    b = prof.meta["backend"]
    backend = get_backend(b["name"], threads=int(b["threads"]), device=b.get("device", "cpu"))
    df = prof.e2e_split("test")
    entries, info = {}, {}
    for i, r in df[df["space"].isin(spaces)].iterrows():
        arch = Architecture.from_json(r["arch_json"])
        ctx = Context(int(r["batch"]), int(r["seq_len"]))
        space = arch.get_space()
        run = backend.prepare_arch(arch, token_inputs(space, EXPORT_CTX))
        backend.bind(run, token_inputs(space, ctx))
        entries[str(i)] = run
        info[str(i)] = {"space": arch.space, "ctx": str(ctx), "profile_ms": float(r["latency_p50_ms"]),
                        "predicted_ms": float(pred.predict(arch, ctx))}
    # the profile's rules, but malloc as the mode's environment leaves it (the protocol's allocator would override it)
    protocol = replace(Protocol.from_dict(prof.meta["protocol"]), allocator="default")
    res = measure_in_rounds(backend, entries, protocol)
    rows = [{**info[k], "now_ms": v["latency_p50_ms"], "faults_per_run": v["faults_per_run"]} for k, v in res.items()]
    Path(out).write_text(json.dumps(rows))


def run_mode(profile: str, spaces: list[str], tunables: str | None) -> list[dict]:
    """One worker process (with ``GLIBC_TUNABLES=tunables`` when given); its rows."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.json")
        subprocess.run([sys.executable, __file__, profile, "--worker", out, "--spaces", ",".join(spaces)], env=env,
                       check=True)
        return json.loads(Path(out).read_text())


def figures(rows: list[dict]) -> dict:
    """Re-measurement against the profile's row and against the predictor, for ``rows``."""
    if not rows:
        return {"n": 0}
    now = np.array([r["now_ms"] for r in rows])
    prof = np.array([r["profile_ms"] for r in rows])
    pred = np.array([r["predicted_ms"] for r in rows])
    e_now, e_prof = pred / now - 1, pred / prof - 1
    return {"n": len(rows),
            "now_over_profile_median": round(float(np.median(now / prof)), 4),
            "now_vs_profile_median_abs_pct": round(float(100 * np.median(np.abs(now / prof - 1))), 2),
            "predicted_vs_now": {"within_10_pct": round(float(np.mean(np.abs(e_now) <= 0.10)), 3),
                                 "within_5_pct": round(float(np.mean(np.abs(e_now) <= 0.05)), 3),
                                 "median_signed_pct": round(float(100 * np.median(e_now)), 2)},
            "predicted_vs_profile": {"within_10_pct": round(float(np.mean(np.abs(e_prof) <= 0.10)), 3),
                                     "within_5_pct": round(float(np.mean(np.abs(e_prof) <= 0.05)), 3)}}


def summarize_mode(rows: list[dict]) -> dict:
    out = {}
    for space in sorted({r["space"] for r in rows}):
        sr = [r for r in rows if r["space"] == space and r["faults_per_run"] is not None]
        f = np.array([r["faults_per_run"] for r in sr])
        by_ctx = {}
        for ctx in sorted({r["ctx"] for r in sr}):
            cr = [r for r in sr if r["ctx"] == ctx]
            by_ctx[ctx] = {"faults_per_run_median": float(np.median([r["faults_per_run"] for r in cr])),
                           "now_over_profile_median": round(float(np.median([r["now_ms"] / r["profile_ms"]
                                                                             for r in cr])), 4)}
        out[space] = {"all": figures(sr),
                      "faults_per_run_quantiles": {q: float(np.quantile(f, q / 100)) for q in (50, 90, 100)},
                      "bands": {b: figures([r for r in sr if lo <= r["faults_per_run"] < hi])
                                for b, (lo, hi) in BANDS.items()},
                      "contexts": by_ctx}
    return out


def markdown(res: dict) -> str:
    lines = ["| mode | space | faults band | n | re-measured / profile, median | predicted vs re-measured: "
             "within +-10 % / +-5 % | predicted vs profile row: within +-10 % / +-5 % |", "|---|---|---|---|---|---|---|"]
    for mode, m in res["modes"].items():
        for space, s in m["summary"].items():
            for band, f in [("all", s["all"]), *s["bands"].items()]:
                if not f["n"]:
                    continue
                pn, pp = f["predicted_vs_now"], f["predicted_vs_profile"]
                lines.append(f"| {mode} | {space} | {band} | {f['n']} | {f['now_over_profile_median']:.3f} | "
                             f"{100 * pn['within_10_pct']:.0f} % / {100 * pn['within_5_pct']:.0f} % | "
                             f"{100 * pp['within_10_pct']:.0f} % / {100 * pp['within_5_pct']:.0f} % |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="?", default=PROFILE, help=f"profile folder (default {PROFILE})")
    ap.add_argument("--spaces", default="adabert,nasbert")
    ap.add_argument("--modes", default="default,pinned,no_mmap",
                    help="default (glibc's own malloc settings), pinned, no_mmap")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--merge", action="store_true", help="keep the other modes already in --out (same profile)")
    ap.add_argument("--markdown", action="store_true", help="print the README table of an existing --out file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    spaces = args.spaces.split(",")
    if args.worker:
        worker(args.profile, spaces, args.worker)
        return 0
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from nas.errors import HwnasError

    try:  # a missing or foreign profile, or a stale predictor: one line here, not a worker's traceback
        prof = read_profile(args.profile)
        load_predictor(prof.path / "predictor.json", prof)
    except HwnasError as e:
        raise SystemExit(f"page_faults: {e}") from None
    res = {"what": __doc__.split("\n\n")[0], "profile": args.profile, "date": datetime.date.today().isoformat(),
           "fault_warn_per_run": FAULT_WARN_PER_RUN,
           "bands": {b: [lo, None if hi == np.inf else hi] for b, (lo, hi) in BANDS.items()}, "modes": {}}
    if args.merge and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        if old.get("profile") != args.profile:
            raise SystemExit(f"--merge: {args.out} is of profile {old.get('profile')}, not {args.profile}")
        res["modes"] = old["modes"]
    modes = {"default": None, "pinned": PINNED, "no_mmap": NO_MMAP}
    unknown = [m for m in args.modes.split(",") if m not in modes]
    if unknown:
        raise SystemExit(f"page_faults: unknown mode {unknown[0]!r}; use {', '.join(modes)}")
    for mode in args.modes.split(","):
        tunables = modes[mode]
        rows = run_mode(args.profile, spaces, tunables)
        res["modes"][mode] = {"glibc_tunables": tunables, "summary": summarize_mode(rows), "rows": rows}
        atomic_write_text(Path(args.out), json.dumps(res, indent=1, default=str) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
