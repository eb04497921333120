"""Does a probe beside each visit divide out the machine's moment? -> benchmarks/results/probe_effect.json

Two parts, each optional:

* ``--live`` (times things: run it on a quiet machine): ``--models`` whole architectures from a profile's ``test``
  rows (half AdaBERT, half NAS-BERT, at b1 s128, b8 s128 and b32 s64), each visited ``--rounds`` times in shuffled
  rounds; within a visit, after 2 untimed runs, 10 model runs, each followed by one sample of every candidate probe
  (the profiler's matmul, :class:`latency.measure.Probe`; an elementwise ReLU over 1 MB; a convolution). Per model:
  the robust visit-to-visit spread of its visit medians raw and divided by each probe's, and the slope of the
  model's log visit median on the matmul probe's. A slope near 1 and a spread that falls when divided says the
  visits move with the machine's speed, which the probe reads.
* ``--profile P`` (times nothing): a profile measured with ``protocol.probe``: its visits rebuilt raw
  (value x ``probe_ms`` / reference) into a scratch copy of the profile, both fitted with the default predictor kind,
  and compared on the same visits: the test-retest agreement, the visit-to-visit spread of ops and whole models, and
  the held-out share within +-5 % / +-10 % and Spearman per Context (min).

    python benchmarks/probe_effect.py --live --profile profiles/amd-epyc-f26m2-2c_torch-2.13_t1
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.io import atomic_write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "probe_effect.json"
CONTEXTS = ((1, 128), (8, 128), (32, 64))
LATENCY = ("latency_p50_ms", "latency_p10_ms", "latency_p90_ms")


def fail(msg: str) -> SystemExit:
    return SystemExit(f"probe_effect.py: {msg}")


def robust_sd(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def pick_models(prof, n: int) -> list[tuple[str, int, int]]:
    """``n`` test architectures of the profile, alternating spaces and the Contexts of :data:`CONTEXTS`."""
    e2e = prof.e2e[prof.e2e["split"] == "test"]
    out = []
    for i in range(n):
        space = ("adabert", "nasbert")[i % 2]
        b, s = CONTEXTS[(i // 2) % len(CONTEXTS)]
        rows = e2e[(e2e["space"] == space) & (e2e["batch"] == b) & (e2e["seq_len"] == s)]
        if rows.empty:
            raise fail(f"{prof.path} has no {space} test row at b{b} s{s}")
        out.append((rows.iloc[(i // 6) % len(rows)]["arch_json"], b, s))
    return out


def live(prof, n_models: int, rounds: int, seed: int) -> dict:
    import torch

    from latency.allocator import apply_allocator
    from latency.backends.base import get_backend
    from latency.measure import Probe, token_inputs
    from latency.stats import Protocol
    from nas.arch import Architecture
    from nas.spaces.ops import Context

    allocator = apply_allocator(Protocol.from_dict(prof.meta.get("protocol") or {}).allocator)
    threads = int(prof.meta["backend"]["threads"])
    torch.set_num_threads(threads)
    matmul = Probe(threads)
    x = torch.randn(256 * 1024, generator=torch.Generator().manual_seed(1))
    conv = torch.nn.Conv1d(64, 64, 5, padding=2).eval()
    xc = torch.randn(8, 64, 128, generator=torch.Generator().manual_seed(2))
    clock = time.perf_counter

    def timed(f):
        t0 = clock()
        f()
        f()
        return clock() - t0

    probes = {"matmul": lambda: matmul.samples(1)[0], "relu_1mb": lambda: timed(lambda: torch.relu(x)),
              "conv1d": lambda: timed(lambda: conv(xc))}
    models = []
    with get_backend(prof.meta["backend"]["name"], threads=threads) as be:
        for text, b, s in pick_models(prof, n_models):
            arch = Architecture.from_json(text)
            r = be.prepare_arch(arch, token_inputs(arch.get_space(), Context(2, 16), seed=0), 2, seed=0)
            be.bind(r, token_inputs(arch.get_space(), Context(b, s), seed=0))
            models.append({"space": arch.space, "context": f"b{b}_s{s}", "arch": arch.key, "r": r, "visits": []})
        rng = random.Random(seed)
        t_start = clock()
        with torch.inference_mode():
            for _ in range(rounds):
                order = list(range(len(models)))
                rng.shuffle(order)
                for i in order:
                    m = models[i]
                    be.time(m["r"], 2)
                    got = {k: [] for k in ("model", *probes)}
                    for _ in range(10):
                        got["model"].append(be.time(m["r"], 1)[0])
                        for k, f in probes.items():
                            got[k].append(f())
                    m["visits"].append({k: statistics.median(v) * 1e3 for k, v in got.items()})
        seconds = clock() - t_start
    rows = []
    for m in models:
        d = np.log(pd.DataFrame(m["visits"]))
        d = d - d.median()
        row = {"space": m["space"], "context": m["context"], "model_ms": round(float(np.exp(
            np.log(pd.DataFrame(m["visits"])["model"]).median())), 4),
               "spread_raw_pct": round(100 * robust_sd(d["model"]), 2),
               **{f"spread_over_{k}_pct": round(100 * robust_sd(d["model"] - d[k]), 2) for k in probes},
               "probe_spread_pct": round(100 * robust_sd(d["matmul"]), 2),
               "slope_on_matmul": round(float(np.polyfit(d["matmul"], d["model"], 1)[0]), 3)}
        rows.append(row)
    t = pd.DataFrame(rows)
    return {"models": rows, "rounds": rounds, "seconds": round(seconds, 1), "allocator": allocator,
            "threads": threads, "summary": {
                "median_spread_raw_pct": round(float(t["spread_raw_pct"].median()), 2),
                **{f"median_spread_over_{k}_pct": round(float(t[f"spread_over_{k}_pct"].median()), 2)
                   for k in probes},
                "median_slope_on_matmul": round(float(t["slope_on_matmul"].median()), 3)}}


def raw_copy(prof, dst: Path) -> None:
    """``dst``: the profile with every visit and row back at the moment's speed (no probe scaling): each row
    combined from its raw visits as the journal combines them (:func:`latency.stats.combine_visits` under the
    profile's ``statistic``)."""
    from latency.journal import read_visits, visit_graph
    from latency.stats import SCALED, Protocol, combine_visits

    ref = prof.meta["probe"]["reference_ms"]
    statistic = Protocol.from_dict(prof.meta["protocol"]).statistic
    for name in ("profile.json", "ops.csv", "e2e.csv"):
        shutil.copy(prof.path / name, dst / name)
    visits: dict[tuple, list[dict]] = {}
    for v in read_visits(prof.path / "visits.csv"):
        if not v["graph"].startswith("retest:"):
            f = v["probe_ms"] / ref
            visits.setdefault((v["graph"], v["batch"], v["seq_len"]), []).append(
                {**v, **{c: v[c] * f for c in SCALED}})
    for name, kind, key in (("ops.csv", "op", "op_key"), ("e2e.csv", "e2e", "arch_json")):
        t = pd.read_csv(prof.path / name, keep_default_na=False)
        for i, r in t.iterrows():
            raw = combine_visits(visits[(visit_graph(kind, r[key]), int(r["batch"]), int(r["seq_len"]))], statistic)
            for c in LATENCY:
                t.at[i, c] = raw[c]
        t.to_csv(dst / name, index=False)


def visit_figures(prof) -> dict:
    """Retest and visit-to-visit spread of the profile's visits, raw and scaled to the reference."""
    ref = prof.meta["probe"]["reference_ms"]
    v = pd.read_csv(prof.path / "visits.csv")
    v["raw"] = v["latency_p50_ms"] * v["probe_ms"] / ref
    v["retest"] = v["graph"].str.startswith("retest:")
    v["g"] = v["graph"].str.replace("retest:", "", regex=False)
    out = {"probe_vs_reference_quantiles": {q: round(float((v["probe_ms"] / ref).quantile(q)), 4)
                                            for q in (0.05, 0.5, 0.95)}}
    for col, name in (("raw", "raw"), ("latency_p50_ms", "scaled")):
        m = v.groupby(["entry", "retest", "g", "batch", "seq_len"])[col].median().unstack("retest").dropna()
        d = (m[True] / m[False] - 1).abs() * 100
        first = v[(v["visit"] < 2) & ~v["retest"]].pivot_table(index=["entry", "g", "batch", "seq_len"],
                                                               columns="visit", values=col).dropna()
        lr = np.log(first[1] / first[0])
        out[name] = {"retest_median_abs_diff_pct": round(float(d.median()), 3),
                     **{f"retest_{k}_pct": round(float(x.median()), 3) for k, x in d.groupby(level=0)},
                     **{f"visit_spread_{k}_pct": round(100 * robust_sd(x), 2) for k, x in lr.groupby(level=0)}}
    return out


def held_out(path: Path) -> dict:
    from latency.evaluate import evaluate
    from latency.predictor import fit
    from latency.profile_data import read_profile

    prof = read_profile(path)
    pred = fit(prof)
    res = evaluate(pred, prof)
    return {sp: {"n": r["all"]["n"], "within_10_pct": round(100 * r["all"]["within_10_pct"], 1),
                 "within_5_pct": round(100 * r["all"]["within_5_pct"], 1),
                 "spearman_min": round(min(c["spearman"] for c in r["contexts"].values()), 3),
                 "kind": pred.kind} for sp, r in res.items()}


def rebuild(prof) -> dict:
    if (prof.meta.get("protocol") or {}).get("probe", "none") == "none" or not prof.meta.get("probe"):
        raise fail(f"{prof.path} was measured without a probe (protocol.probe none): nothing to rebuild; profile "
                   f"with the default protocol (hwnas profile ... without --probe none)")
    if not (prof.path / "visits.csv").is_file():
        raise fail(f"{prof.path} has no visits.csv (a merged profile?): the raw visits are needed")
    with tempfile.TemporaryDirectory() as scratch:
        dst = Path(scratch) / prof.path.name
        dst.mkdir()
        raw_copy(prof, dst)
        return {"visits": visit_figures(prof), "held_out": {"scaled": held_out(prof.path), "raw": held_out(dst)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, help="a CPU profile folder: the models of --live come from its test "
                                                     "rows; without --live, its visits are rebuilt raw")
    ap.add_argument("--live", action="store_true", help="time whole models interleaved with candidate probes")
    ap.add_argument("--no-rebuild", action="store_true", help="with --live: skip the profile's raw rebuild")
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from latency.profile_data import read_profile
    from nas.errors import HwnasError

    try:
        prof = read_profile(args.profile)
    except HwnasError as e:
        raise fail(str(e)) from None
    if prof.meta["backend"].get("device", "cpu") != "cpu":
        raise fail(f"{args.profile} is a {prof.meta['backend']['device']} profile; the probe is a CPU workload")
    doc = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "profile": str(args.profile)}
    if not args.no_rebuild:
        doc["rebuild"] = rebuild(prof)
    if args.live:
        doc["live"] = live(prof, args.models, args.rounds, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    if "rebuild" in doc:
        vis, ho = doc["rebuild"]["visits"], doc["rebuild"]["held_out"]
        for k in ("raw", "scaled"):
            print(f"{k}: retest {vis[k]['retest_median_abs_diff_pct']} %, visit spread ops "
                  f"{vis[k].get('visit_spread_op_pct')} %, whole models {vis[k].get('visit_spread_e2e_pct')} %; held "
                  + "; ".join(f"{sp} {r['within_10_pct']} / {r['within_5_pct']} % rho {r['spearman_min']}"
                              for sp, r in ho[k].items()))
    if "live" in doc:
        print(f"live ({doc['live']['seconds']} s): {doc['live']['summary']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
