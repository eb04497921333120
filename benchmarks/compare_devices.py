"""Compare devices -> benchmarks/results/compare.json (+ the headline chart, benchmarks/results/compare_*.png).

1. ``fresh``: a quick profile of the machine the benchmark runs on (``hwnas profile --quick``), fitted.
2. ``proxy``: every shipped profile plus the fresh one, both spaces, two budgets each, at batch 1 x seq_len 128:
   each device's latency-only choice (parameters as capacity proxy), the cross-latency matrix (predicted; measured
   on every profile that is this machine) and the regret figures. Writes the HTML report of each comparison under
   ``--work``.
3. ``runs``: the same budgets choosing from real search runs: the NAS-BERT benchmark's run (re-selection) and the
   AdaBERT SST-2 headline run (re-derivation), on the profiles measurable here and the Intel one.
4. ``contexts``: batch 1 vs batch 32 as deployment Contexts of one device (this machine's onnxruntime profile): the
   choice at a b1 budget, and at b32 the choice under the b32 latency of that same model; do they differ?

Measurement needs a quiet machine: run nothing heavy beside it.
``python benchmarks/compare_devices.py [--stage all]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.io import atomic_write_text  # noqa: E402
from nas.spaces import Context  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = {"nasbert": [3.0, 6.0], "adabert": [1.5, 3.0]}
RUNS = {"nasbert": ROOT / "runs" / "bench" / "nasbert", "adabert": ROOT / "runs" / "bench" / "sst2" / "headline_r80"}


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def shipped() -> list[str]:
    from latency.table import list_profiles

    return [p["name"] for p in list_profiles()]


def fresh(work: Path) -> str:
    out = work / "fresh_profile"
    if not (out / "predictor.json").is_file():
        hwnas = [sys.executable, "-m", "nas.cli"]
        subprocess.run([*hwnas, "profile", "--backend", "onnxruntime", "--threads", "1", "--space", "adabert,nasbert",
                        "--quick", "--out", str(out)], check=True, cwd=ROOT)
        subprocess.run([*hwnas, "fit", str(out)], check=True, cwd=ROOT)
    return str(out)


def summary(df) -> dict:
    """What a reader needs from one comparison: the choices, the matrix, the differing pairs and their regret."""
    a = df.attrs
    devs = {n: {k: d.get(k) for k in ("feasible", "fastest_ms", "predicted_latency_ms", "params", "quality",
                                      "op_mix", "breakdown_ms", "measured_here", "note", "arch")}
            for n, d in a["devices"].items()}
    pairs = []
    off = df[df["chosen_on"] != df["evaluated_on"]]
    for _, r in off.iterrows():
        pairs.append({k: (None if (isinstance(v, float) and v != v) else v) for k, v in r.items() if k != "arch_json"})
    return {"budget_ms": a["budget_ms"], "batch": a["batch"], "seq_len": a["seq_len"], "method": a["method"],
            "quality_measure": a["quality_measure"], "devices": devs, "pairs": pairs,
            "distinct_architectures": len({json.dumps(d["arch"]) for d in devs.values() if d.get("arch")}),
            "fronts": a["fronts"]}


def run_compare(profiles, space, budget, ctx, work: Path, run=None) -> dict:
    from nas.compare import compare
    from nas.compare_report import write_report

    t0 = time.perf_counter()
    df = compare(profiles, space, budget, ctx, run=run, measure=True, fronts=(0.6, 1.6))
    tag = f"{space}_{budget:g}ms_b{ctx.batch}" + ("_run" if run else "")
    write_report(df, work / tag)
    out = summary(df)
    out["seconds"] = time.perf_counter() - t0
    out["report"] = str(work / tag / "report.html")
    return out


def contexts(profile: str, space: str, budget: float) -> dict:
    """Batch 1 vs batch 32 on one device: the b1 choice, and the b32 choice at that model's own b32 latency."""
    from latency.archsets import capacity_model, full_indices, latency_search
    from latency.predictor import load_predictor
    from latency.profile_data import read_profile

    prof = read_profile(profile, need_ops=False)
    pred = load_predictor(prof.path, prof)
    sp = pred.space(space, pred.cover(space)["preset"])
    cap = capacity_model(sp)
    c1, c32 = pred.cost_matrix(sp, Context(1, 128)), pred.cost_matrix(sp, Context(32, 128))
    idx1, ms1, _ = latency_search(sp, c1, cap, budget)
    a1 = sp.from_indices(full_indices(sp, idx1))
    b32 = c32.value(sp.indices(a1)) / (1 - 0.015)  # latency_search aims below (1 - margin) x budget
    idx32, _, _ = latency_search(sp, c32, cap, b32)
    a32 = sp.from_indices(full_indices(sp, idx32))
    from nas.compare import op_mix

    return {"profile": profile, "space": space, "budget_b1_ms": budget, "budget_b32_ms": b32,
            "b1_choice": {"arch": a1.to_dict(), "b1_ms": c1.value(sp.indices(a1)), "b32_ms": c32.value(sp.indices(a1)),
                          "params": cap.value(sp.indices(a1)), "op_mix": op_mix(sp, a1)},
            "b32_choice": {"arch": a32.to_dict(), "b1_ms": c1.value(sp.indices(a32)),
                           "b32_ms": c32.value(sp.indices(a32)), "params": cap.value(sp.indices(a32)),
                           "op_mix": op_mix(sp, a32)},
            "same_architecture": a1 == a32}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["fresh", "proxy", "runs", "contexts", "all"])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "compare")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    state = args.work / "bench.json"
    res = load(state)
    ctx = Context(1, 128)
    stages = ["fresh", "proxy", "runs", "contexts"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "fresh":
            res["fresh_profile"] = fresh(args.work)
        elif stage == "proxy":
            profiles = [*shipped(), res.get("fresh_profile") or fresh(args.work)]
            res["proxy"] = {f"{s}_{b:g}": run_compare(profiles, s, b, ctx, args.work) for s in BUDGETS
                            for b in BUDGETS[s]}
            res["profiles"] = profiles
        elif stage == "runs":
            here = ["amd-epyc-2c_ort-1.31_t1", "amd-epyc-2c_torch-2.13_t1", "intel-xeon-2c_ort-1.31_t1"]
            res["runs"] = {f"{s}_{b:g}": run_compare(here, s, b, ctx, args.work, run=RUNS[s]) for s in BUDGETS
                           for b in BUDGETS[s] if (RUNS[s] / "config.json").is_file()}
        elif stage == "contexts":
            res["contexts"] = [contexts("amd-epyc-2c_ort-1.31_t1", s, BUDGETS[s][0]) for s in BUDGETS]
        res["date"] = time.strftime("%Y-%m-%d")
        res["machine"] = "AMD EPYC, 2 cores (the shipped amd-epyc-2c_* profiles' device)"
        save(state, res)
        save(RESULTS / "compare.json", res)
        print(f"stage {stage} done", file=sys.stderr)
    headline = res.get("proxy", {}).get("nasbert_3")
    if headline:
        import shutil

        shutil.copy(Path(headline["report"]).parent / "cross_latency.png", RESULTS / "compare_nasbert_3ms_cross.png")
        shutil.copy(Path(headline["report"]).parent / "fronts.png", RESULTS / "compare_nasbert_3ms_fronts.png")


if __name__ == "__main__":
    main()
