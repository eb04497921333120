"""The GPU profile judged like the CPU ones -> benchmarks/results/gpu_profile.json.

Reads a GPU profile folder (measured on the lent GPU machine by ``benchmarks/gpu_device_run.sh``) and this CPU's
shipped profiles; measures nothing, so it runs anywhere:

1. cost and protocol: the device, backend and protocol recorded, the clock warm-up, visits taken and retaken;
2. repeatability: test-retest agreement, spread of an entry's visits, drift of the whole machine along the
   measurement order, and what other statistics of the same visits would have given;
3. what bounds the GPU: ops against the GPU roofline, whole models' latency from batch 1 x 32 tokens to
   batch 64 x 256 (a launch-bound model hardly moves);
4. the default predictor on the profile's held-out ``test`` split beside the CPU profiles' figures
   (``results/predictor_accuracy.json``), and what it (and the CPU profiles' predictors) would read with rows
   rebuilt from the same visits as their minimum instead of their median;
5. per op, GPU / CPU cost ratio (the same torch eager ops on this CPU, 1 thread) at the Contexts both grids have:
   which ops are cheap where;
6. with the predictors, the architecture a latency-only search returns under the same budget (a fraction of each
   device's range, and the same milliseconds where the ranges overlap) at batch 1 and batch 32, GPU vs CPU.

Run: ``python benchmarks/gpu_profile.py [--gpu PROFILE] [--cpu PROFILE ...] [--session-wall S,S]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.evaluate import evaluate, test_points  # noqa: E402
from latency.predictor import DEFAULT_KIND, fit, load_predictor  # noqa: E402
from latency.profile_data import read_profile  # noqa: E402
from latency.stats import retest_agreement  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402
from nas.spaces import Context  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from predictor_accuracy import summarise  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "gpu_profile.json"
GPU = "nvidia-h200_torch-2.11_cuda"
CPUS = ("amd-epyc-2c_torch-2.13_t1", "amd-epyc-2c_ort-1.31_t1")
FRACTIONS = (0.3, 0.6)
SEARCH_CTXS = (Context(1, 128), Context(32, 128))


def visits_frame(prof) -> pd.DataFrame:
    v = pd.read_csv(prof.path / "visits.csv")
    v["order"] = np.arange(len(v))
    v["retest"] = v["graph"].str.startswith("retest:")
    v["entry_id"] = v["graph"].str.replace("retest:", "", regex=False)
    return v


def repeatability(prof) -> dict:
    """Retest agreement under the profile's statistic and under others computed from the same visits; visit
    spread; retakes; drift of the machine (each visit over its entry's median, rolling median along the order)."""
    v = visits_frame(prof)
    key = ["entry_id", "batch", "seq_len"]
    stats = {"median of visit p50 (the protocol's)": ("latency_p50_ms", "median"),
             "min of visit p50": ("latency_p50_ms", "min"), "min of visit p10": ("latency_p10_ms", "min")}
    what_if = {}
    for name, (col, how) in stats.items():
        a = v[~v.retest].groupby(key)[col].agg(how)
        b = v[v.retest].groupby(key)[col].agg(how)
        j = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
        what_if[name] = {k: val for k, val in retest_agreement(j.a.to_numpy(), j.b.to_numpy()).items()}
    main = v[~v.retest]
    g = main.groupby(key)
    spread = (g.latency_p50_ms.max() - g.latency_p50_ms.min()) / g.latency_p50_ms.median()
    visits_per_entry = g.size()
    main = main.assign(rel=main.latency_p50_ms / g.latency_p50_ms.transform("median"))
    rolling = main.rel.rolling(200, center=True, min_periods=50).median()
    within_visit_cv = (main.sd_ms / main.mean_ms)
    return {
        "visits": int(len(v)), "visits_by_kind": v.groupby("entry").size().to_dict(),
        "entries_by_visits": {str(k): int(n) for k, n in visits_per_entry.value_counts().sort_index().items()},
        "visit_spread_median": round(float(spread.median()), 3),
        "visit_spread_p90": round(float(spread.quantile(0.9)), 3),
        "within_visit_cv_median": round(float(within_visit_cv.median()), 3),
        "stop_reasons": v.groupby("stop").size().to_dict(),
        "drift": {"note": "each visit over its entry's median, rolling median of 200 visits along the measurement "
                          "order: 1.0 = the machine as fast as usual",
                  "min": round(float(rolling.min()), 3), "max": round(float(rolling.max()), 3),
                  "every_500_visits": [round(float(x), 3) for x in rolling.iloc[::500].dropna()]},
        "retest_by_statistic": what_if,
    }


def what_bounds(prof) -> dict:
    """Ops against the roofline; whole models' latency growth from the smallest to the largest Context."""
    roof = pd.read_csv(prof.path / "roofline.csv")
    ops = prof.ops
    e2e = prof.e2e
    lo, hi = (int(e2e.batch.min()), int(e2e.seq_len.min())), (int(e2e.batch.max()), int(e2e.seq_len.max()))
    cols = ["arch_json", "space", "latency_p50_ms"]
    small = e2e[(e2e.batch == lo[0]) & (e2e.seq_len == lo[1])][cols]
    large = e2e[(e2e.batch == hi[0]) & (e2e.seq_len == hi[1])][cols]
    m = small.merge(large, on=["arch_json", "space"], suffixes=("_small", "_large"))
    m["growth"] = m.latency_p50_ms_large / m.latency_p50_ms_small
    by_space = {s: round(float(g.growth.median()), 2) for s, g in m.groupby("space")}
    tokens = hi[0] * hi[1] / (lo[0] * lo[1])
    return {
        "ops_pct_of_bound_median": round(float(roof.pct_of_bound.median()), 2),
        "ops_pct_of_bound_p90": round(float(roof.pct_of_bound.quantile(0.9)), 2),
        "ops_under_20us_share": round(float((ops.latency_p50_ms < 0.02).mean()), 3),
        "op_latency_ms_quartiles": [round(float(x), 4) for x in ops.latency_p50_ms.quantile([0.25, 0.5, 0.75])],
        "e2e_growth": {"from": f"b{lo[0]} s{lo[1]}", "to": f"b{hi[0]} s{hi[1]}", "tokens_x": tokens,
                       "median_latency_x_by_space": by_space},
    }


def accuracy(prof, pred) -> dict:
    """Per space on the held-out rows: ``predictor_accuracy.summarise``'s figures, without the per-Context table."""
    res = summarise(evaluate(pred, prof, points=test_points(pred, prof)))
    keys = ("n", "within_5_pct", "within_10_pct", "mape_pct", "bias_pct", "spearman_min_ctx", "spearman_mean_ctx")
    return {space: {k: r[k] for k in keys} for space, r in res.items()}


def what_if_min(prof, pred_kind: str = DEFAULT_KIND) -> dict:
    """The default predictor refitted and judged with every row rebuilt from its visits as the *minimum* of the
    visit medians instead of their median (no new measurement): how much of the miss is the statistic's."""
    from latency.journal import visit_graph
    from latency.profile_data import ProfileData

    v = visits_frame(prof)
    main = v[~v.retest].groupby(["graph", "batch", "seq_len"]).latency_p50_ms.min()
    ops = prof.ops.copy()
    ops["latency_p50_ms"] = [main[(k, b, s)] for k, b, s in zip(ops.op_key, ops.batch, ops.seq_len)]
    e2e = prof.e2e.copy()
    gid = {a: visit_graph("e2e", a) for a in e2e.arch_json.unique()}
    e2e["latency_p50_ms"] = [main[(gid[a], b, s)] for a, b, s in zip(e2e.arch_json, e2e.batch, e2e.seq_len)]
    rebuilt = ProfileData(prof.path, prof.meta, ops, e2e)
    pred = fit(rebuilt, pred_kind)
    return {"statistic": "min of visit medians (ops and whole models; fit and test rows alike)",
            "accuracy": accuracy(rebuilt, pred)}


def cpu_accuracy() -> dict:
    """The CPU profiles' default-predictor figures, from results/predictor_accuracy.json."""
    path = ROOT / "benchmarks" / "results" / "predictor_accuracy.json"
    if not path.is_file():
        return {}
    res = json.loads(path.read_text())
    out = {}
    for name, p in res.get("profiles", {}).items():
        kind = (p.get("kinds") or {}).get(res.get("default_kind", DEFAULT_KIND))
        if kind:
            out[name] = {s: {k: m.get(k) for k in ("n", "within_5_pct", "within_10_pct", "spearman_min_ctx")}
                         for s, m in kind["spaces"].items()}
    return out


def op_ratios(gpu, cpu) -> dict:
    """GPU / CPU latency per op at the Contexts both profiles measured; per kind and the extremes."""
    cols = ["op_key", "kind", "hidden", "batch", "seq_len", "latency_p50_ms"]
    j = gpu.ops[cols].merge(cpu.ops[cols], on=["op_key", "kind", "hidden", "batch", "seq_len"], suffixes=("_gpu", "_cpu"))
    j = j[(j.kind != "identity") & (j.latency_p50_ms_cpu > 0)]
    j["ratio"] = j.latency_p50_ms_gpu / j.latency_p50_ms_cpu
    ctxs = sorted({(int(b), int(s)) for b, s in zip(j.batch, j.seq_len)})
    per_kind = {}
    for (b, s) in ((1, 128), (32, 128)):
        if (b, s) in ctxs:
            sub = j[(j.batch == b) & (j.seq_len == s)]
            per_kind[f"b{b} s{s}"] = {k: round(float(g.ratio.median()), 4) for k, g in sub.groupby("kind")}
    at = j[(j.batch == 32) & (j.seq_len == 128)].sort_values("ratio")
    rows = lambda df: [{"op": r.op_key, "gpu_ms": round(r.latency_p50_ms_gpu, 4),  # noqa: E731
                        "cpu_ms": round(r.latency_p50_ms_cpu, 4), "gpu_over_cpu": round(r.ratio, 4)}
                       for r in df.itertuples()]
    return {"cpu_profile": cpu.name, "common_contexts": [f"b{b} s{s}" for b, s in ctxs], "n_pairs": int(len(j)),
            "median_ratio_by_context": {f"b{b} s{s}": round(float(j[(j.batch == b) & (j.seq_len == s)].ratio.median()), 4)
                                        for b, s in ctxs},
            "median_ratio_by_kind": per_kind,
            "cheapest_on_gpu_b32_s128": rows(at.head(8)), "dearest_on_gpu_b32_s128": rows(at.tail(8)[::-1])}


def search(preds: dict, space_name: str, ctx: Context) -> dict:
    """Per device: the latency-only search's architecture at FRACTIONS of its range, and at one common budget in
    ms where the devices' ranges overlap; each architecture also priced on the other devices."""
    from latency.archsets import budget_range, capacity_model, full_indices, latency_search
    from nas.compare import op_mix

    spaces = {n: p.space(space_name) for n, p in preds.items()}
    costs = {n: preds[n].cost_matrix(spaces[n], ctx) for n in preds}
    capacity = {n: capacity_model(spaces[n]) for n in preds}
    ranges = {n: budget_range(costs[n], capacity[n]) for n in preds}
    lo = max(r[0] for r in ranges.values())
    hi = min(r[1] for r in ranges.values())
    budgets = [("fraction", f) for f in FRACTIONS] + ([("ms", round(float(np.sqrt(lo * hi)), 3))] if lo < hi else [])
    out = {"ctx": str(ctx), "ranges_ms": {n: [round(a, 4), round(b, 4)] for n, (a, b) in ranges.items()},
           "budgets": []}
    for how, value in budgets:
        row = {"budget": f"{value:g} of each device's range" if how == "fraction" else f"{value} ms on every device",
               "devices": {}}
        keys = {}
        for n in preds:
            a, b = ranges[n]
            budget = a + value * (b - a) if how == "fraction" else value
            idx, predicted, _ = latency_search(spaces[n], costs[n], capacity[n], budget)
            arch = spaces[n].from_indices(full_indices(spaces[n], idx))
            keys[n] = arch.key
            row["devices"][n] = {"budget_ms": round(budget, 4), "predicted_ms": round(predicted, 4),
                                 "params": int(spaces[n].analytic_params(arch)), "op_mix": op_mix(spaces[n], arch),
                                 "on_other_devices_ms": {m: round(float(preds[m].predict(arch, ctx)), 4)
                                                         for m in preds if m != n},
                                 "arch": arch.to_dict()}
        names = list(preds)
        row["same_architecture"] = {f"{x} vs {y}": keys[x] == keys[y] for i, x in enumerate(names)
                                    for y in names[i + 1:]}
        out["budgets"].append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default=str(ROOT / "profiles" / GPU))
    ap.add_argument("--cpu", nargs="*", default=[str(ROOT / "profiles" / c) for c in CPUS],
                    help="CPU profiles; the first (same framework as the GPU's) gives the op ratios")
    ap.add_argument("--session-wall", default="347,340",
                    help="seconds each device call spent profiling (from benchmarks/gpu_device_run.sh's log: a "
                         "session stopped by its time limit has no wall_s of its own)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    gpu = read_profile(args.gpu)
    cpus = [read_profile(c) for c in args.cpu]
    preds = {gpu.name: load_predictor(gpu.path, gpu), **{c.name: load_predictor(c.path, c) for c in cpus}}
    meta = gpu.meta
    walls = [float(x) for x in args.session_wall.split(",") if x]
    result = {
        "profile": gpu.name, "status": meta.get("status"), "partial": meta.get("partial"),
        "device": meta["device"], "backend": meta["backend"], "protocol": meta["protocol"], "grid": meta["grid"],
        "sessions": [{k: s.get(k) for k in ("started", "settle", "gpu_clocks_start", "gpu_clocks_end")}
                     for s in meta["sessions"]],
        "profiling_wall_s": {"per_call": walls, "total": sum(walls)},
        "rows": {"ops": int(len(gpu.ops)), "e2e": int(len(gpu.e2e)),
                 "e2e_test": int((gpu.e2e.split == "test").sum())},
        "roofline": {k: meta["roofline"].get(k) for k in ("peak_gflops", "bandwidth_gbs", "dram_bandwidth_gbs",
                                                          "summary", "method")},
        "retest": {k: v for k, v in (meta.get("retest") or {}).items() if k != "entries"},
        "repeatability": repeatability(gpu),
        "what_bounds": what_bounds(gpu),
        "accuracy": {"gpu": accuracy(gpu, preds[gpu.name]), "predictor": preds[gpu.name].kind,
                     "gpu_what_if_min_statistic": what_if_min(gpu), "cpu_profiles": cpu_accuracy(),
                     "cpu_what_if_min_statistic": {c.name: {"median": accuracy(c, fit(c)), **what_if_min(c)}
                                                   for c in cpus}},
        "op_ratios": op_ratios(gpu, cpus[0]),
        "search": {s: [search(preds, s, ctx) for ctx in SEARCH_CTXS] for s in ("adabert", "nasbert")},
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=1, default=str) + "\n")
    r = result
    print(f"{gpu.name}: {r['rows']}, status {r['status']}, profiling {sum(walls):.0f} s")
    print(f"retest {r['retest'].get('median_abs_diff_pct')} % median |diff|; by statistic: " + "; ".join(
        f"{k}: {v.get('median_abs_diff_pct')} % (p90 {v.get('p90_abs_diff_pct')})"
        for k, v in r["repeatability"]["retest_by_statistic"].items()))
    print("drift", r["repeatability"]["drift"]["min"], "-", r["repeatability"]["drift"]["max"],
          "visit spread median", r["repeatability"]["visit_spread_median"])
    print("bounds", r["what_bounds"])
    print("accuracy", json.dumps(r["accuracy"]["gpu"]))
    print("what-if min statistic", json.dumps(r["accuracy"]["gpu_what_if_min_statistic"]["accuracy"]))
    for name, w in r["accuracy"]["cpu_what_if_min_statistic"].items():
        print(name, "median -> min:", {sp: (round(w["median"][sp]["within_10_pct"], 3), round(m["within_10_pct"], 3))
                                       for sp, m in w["accuracy"].items()})
    print("op ratios by context", r["op_ratios"]["median_ratio_by_context"])
    for s, rows in r["search"].items():
        for row in rows:
            for b in row["budgets"]:
                print(s, row["ctx"], b["budget"], b["same_architecture"], {
                    n: (d["budget_ms"], d["predicted_ms"], d["params"], d["op_mix"]["kinds"]) for n, d in b["devices"].items()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
