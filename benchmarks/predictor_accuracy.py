"""Predictor accuracy on the shipped profiles -> benchmarks/results/predictor_accuracy.json.

For every profile folder (default: each one under ``profiles/``) and every predictor kind:

* held-out whole architectures (the ``test`` split, never used for fitting): share within +-5% / +-10%, MAPE,
  RMSE, Spearman per space and Context, with the Spearman of FLOPs and of parameter count as baselines;
* interpolation: each interior grid ``seq_len`` is removed from the op table *and* from the calibration rows,
  the predictor is refitted, and the test rows at that ``seq_len`` are predicted;
* cost to build: op and whole-model measurements and the measuring time they took;
* the architectures a budgeted search returned (``results/budget_fidelity*.json`` of the profile), when present.

Then few-shot transfer between profiles of the same CPU (onnxruntime 1 -> 2 threads, onnxruntime -> torch):
``transfer()`` from <= 10 / 20 calibration rows of the target, judged on the target's test split.

Run: ``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/predictor_accuracy.py [PROFILE ...]``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.calibration import cold_slope  # noqa: E402
from latency.evaluate import evaluate, test_points  # noqa: E402
from latency.predictor import DEFAULT_KIND, KINDS, fit  # noqa: E402
from latency.profile_data import ProfileData, read_profile  # noqa: E402
from latency.transfer import transfer  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402
from nas.spaces.ops import Context  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "predictor_accuracy.json"


def summarise(res: dict) -> dict:
    """Per space: the pooled figures plus the worst / mean per-Context Spearman (the targets are per Context)."""
    out = {}
    for space, r in res.items():
        ctx = list(r["contexts"].values())

        def rho(key, ctx=ctx):
            vals = [m[key] for m in ctx if m[key] is not None]
            return (float(np.min(vals)) if vals else None, float(np.mean(vals)) if vals else None)

        out[space] = {**{k: r["all"][k] for k in ("n", "within_5_pct", "within_10_pct", "mape_pct", "bias_pct",
                                                  "rmse_ms")},
                      "spearman_min_ctx": rho("spearman")[0], "spearman_mean_ctx": rho("spearman")[1],
                      "spearman_pooled": r["all"]["spearman"],
                      "spearman_flops_mean_ctx": rho("spearman_flops")[1],
                      "spearman_params_mean_ctx": rho("spearman_params")[1],
                      "contexts": r["contexts"]}
    return out


def without_seq(prof: ProfileData, seq: int) -> ProfileData:
    """The profile as if ``seq`` had never been measured (ops and calibration rows; test rows kept)."""
    ops = prof.ops[prof.ops["seq_len"] != seq].reset_index(drop=True)
    e2e = prof.e2e[(prof.e2e["split"] == "test") | (prof.e2e["seq_len"] != seq)].reset_index(drop=True)
    meta = json.loads(json.dumps(prof.meta))
    meta["grid"]["seq_len"] = [s for s in meta["grid"]["seq_len"] if s != seq]
    return replace(prof, ops=ops, e2e=e2e, meta=meta)


def build_cost(prof: ProfileData) -> dict:
    """Measurements behind a profile and the minutes they took (from its sessions, else estimated from runs)."""
    ops, e2e = prof.ops if prof.ops is not None else [], prof.e2e if prof.e2e is not None else []
    secs = sum(float(s.get("wall_s") or s.get("elapsed_s") or 0) for s in prof.meta.get("sessions") or [])
    est = 0.0
    for df in (ops, e2e):
        if len(df):
            est += float((df["latency_p50_ms"] * df["n_runs"]).sum()) / 1000.0
    return {"op_measurements": int(len(ops)), "e2e_measurements": int(len(e2e)),
            "e2e_calibration": int((e2e["split"] == "calibration").sum()) if len(e2e) else 0,
            "e2e_test": int((e2e["split"] == "test").sum()) if len(e2e) else 0,
            "profile_minutes": round(secs / 60, 1) if secs else None,
            "timed_minutes_lower_bound": round(est / 60, 1)}


def repeatability(prof: ProfileData) -> dict | None:
    """How well the profile's own measurements agree with a second measurement of the same entries (its retest):
    the ceiling for any predictor judged against one measurement."""
    entries = (prof.meta.get("retest") or {}).get("entries") or []
    out = {}
    for label, rows in (("e2e", [e for e in entries if "#" in e["entry"]]),
                        ("op", [e for e in entries if "#" not in e["entry"]])):
        d = np.array([abs(e["second_ms"] / e["first_ms"] - 1) for e in rows])
        if len(d):
            out[label] = {"n": int(len(d)), "within_5_pct": float(np.mean(d <= 0.05)),
                          "within_10_pct": float(np.mean(d <= 0.10)), "median_abs_diff_pct": float(100 * np.median(d))}
    return out or None


def accuracy(prof: ProfileData) -> dict:
    out = {"backend": prof.meta.get("backend", {}), "grid": prof.meta.get("grid"), "cost": build_cost(prof),
           "repeatability": repeatability(prof), "kinds": {}, "interpolation": {}}
    for kind in KINDS:
        t0 = time.perf_counter()
        pred = fit(prof, kind)
        fit_s = time.perf_counter() - t0
        pts = test_points(pred, prof)
        out["kinds"][kind] = {"fit_s": round(fit_s, 2), "spaces": summarise(evaluate(pred, prof, points=pts)),
                              "cold": cold_terms(pred)}
        print(f"  {kind:24s} " + "  ".join(
            f"{s}: 10%={m['within_10_pct']:.0%} 5%={m['within_5_pct']:.0%} MAPE={m['mape_pct']:.1f} "
            f"rho_min={m['spearman_min_ctx']}" for s, m in out["kinds"][kind]["spaces"].items()), flush=True)
    seqs = sorted(prof.ops["seq_len"].unique().tolist())
    for seq in seqs[1:-1]:
        sub = without_seq(prof, int(seq))
        res = {}
        for kind in KINDS:
            pred = fit(sub, kind)
            pts = [p for p in test_points(pred, sub) if p["ctx"].seq_len == seq]
            res[kind] = summarise(evaluate(pred, sub, points=pts))
        out["interpolation"][f"seq_len={seq}"] = res
        print(f"  interpolation seq_len={seq}: " + "  ".join(
            f"{k}: " + ",".join(f"{s} 10%={m['within_10_pct']:.0%} 5%={m['within_5_pct']:.0%}" for s, m in r.items())
            for k, r in res.items()), flush=True)
    return out


def cold_terms(pred) -> dict:
    """Per space, the calibration's cold-weights term ``{knee_mb, slope}`` (None where cross-validation chose none)."""
    layers = getattr(pred, "layers", [])
    out = {}
    for s in pred.spaces:
        c = layers[0].coef.get(s["name"], {}).get("cold") if layers else None
        out[s["name"]] = {**c, "basis": list(layers[0].spec.cold)} if c else None
    return out


def arch_sets(prof: ProfileData) -> dict[str, str]:
    """arch_json -> the set it was measured in: random, homogeneous, searched (fastest / slowest / latency-only)."""
    from latency.archsets import homogeneous_archs
    from nas.arch import Architecture
    from nas.spaces import get_space

    out = {}
    for s in prof.spaces():
        out.update({a.key: "homogeneous" for a in homogeneous_archs(get_space(s["name"], s["preset"]), 2)})
    for archs in ((prof.meta.get("derived_archs") or {}).get("archs") or {}).values():
        out.update({Architecture.from_dict(a).key: "searched" for a in archs})
    return out


def by_set(prof: ProfileData, kind: str = DEFAULT_KIND) -> dict:
    """The default predictor on the test split, per space and per set of architectures."""
    from latency.profile_data import ProfileData as PD

    sets = arch_sets(prof)
    pred = fit(prof, kind)
    out = {}
    for name in ("random", "homogeneous", "searched"):
        e2e = prof.e2e[prof.e2e["arch_json"].map(lambda k: sets.get(k, "random")) == name]
        if (e2e["split"] == "test").any():
            sub = PD(prof.path, prof.meta, prof.ops, e2e)
            out[name] = {sp: {k: m["all"][k] for k in ("n", "within_5_pct", "within_10_pct", "mape_pct", "bias_pct")}
                         for sp, m in evaluate(pred, sub).items()}
    return out


def search_found(prof: ProfileData) -> dict | None:
    """Each kind on the architectures a budgeted search returned (``results/budget_fidelity*.json`` of this
    profile): homogeneous, extreme ones, measured whole 3 times; the case a search meets. A run whose predictor
    carried a ``--recheck`` speed factor is judged with that factor on each kind's predictions, as its searches
    saw them; a run with ``--reference`` rows (the profile's own, measured in the same rounds) with the speed those
    read instead, the machine's during the measurements."""
    rows = search_rows(prof)
    if not rows:
        return None
    out = {}
    for kind in KINDS:
        pred = fit(prof, kind)
        out[kind] = {space: {k: m["all"][k] for k in ("n", "within_5_pct", "within_10_pct", "mape_pct", "bias_pct")}
                     for space, m in evaluate(pred, prof, points=search_points(pred, rows)).items()}
    return out


def search_rows(prof: ProfileData) -> list[dict]:
    """The measured rows of the budgeted searches on ``prof`` (``results/budget_fidelity*.json``, not superseded),
    each with the speed factor its searches' predictor carried (``speed``; with ``drift_in_rounds``, the speed the
    profile's reference rows read in the same rounds). A result that records the profile's
    ``created`` time (``profile_created``, since 2026-12-06) counts only for that measurement of the profile: a
    profile of the same name measured elsewhere (e.g. a judge profile under ``runs/``) is another one."""
    rows = []
    created = prof.meta.get("created")
    for f in sorted((ROOT / "benchmarks" / "results").glob("budget_fidelity*.json")):
        r = json.loads(f.read_text())
        if r.get("profile_created", created) != created:
            continue
        if r.get("profile") == prof.name and not r.get("superseded_by"):  # not a run on an earlier measurement
            speed = (r.get("recheck_before_search") or {}).get("factor", 1.0)
            if r.get("drift_in_rounds"):  # the profile's rows measured in the same rounds: the speed they ran at
                speed = 1 + r["drift_in_rounds"]["median_signed_diff_pct"] / 100
            rows += [{**row, "speed": speed} for row in r["rows"]]
    return rows


def search_points(pred, rows: list[dict]) -> list[dict]:
    """:func:`search_rows` as :func:`latency.evaluate.evaluate` points, predicted by ``pred`` times each row's
    speed factor."""
    from nas.arch import Architecture

    return [{"space": r["space"], "ctx": Context(r["batch"], r["seq_len"]), "measured_ms": r["measured_latency_ms"],
             "predicted_ms": r["speed"] * pred.predict(Architecture.from_dict(r["arch"]), Context(r["batch"], r["seq_len"])),
             "flops": 0.0, "params": float(r["params"])} for r in rows]


def few_shot(src: ProfileData, dst: ProfileData, shots_list=(10, 20), seeds=(0, 1, 2)) -> dict:
    """Adapt ``src``'s default predictor to ``dst`` from a few of ``dst``'s calibration rows."""
    base = fit(src, DEFAULT_KIND)
    out = {"source": src.name, "target": dst.name, "no_adaptation": summarise(evaluate(base_as(base, dst), dst))}
    own = fit(dst, DEFAULT_KIND) if dst.ops is not None and len(dst.ops) else None
    if own is not None:
        out["target_full_profile"] = summarise(evaluate(own, dst))
    for shots in shots_list:
        runs = [summarise(evaluate(transfer(base, dst, shots=shots, seed=s), dst)) for s in seeds]
        out[f"shots={shots}"] = {
            space: {k: float(np.mean([r[space][k] for r in runs])) for k in
                    ("within_10_pct", "within_5_pct", "mape_pct", "spearman_min_ctx", "spearman_mean_ctx",
                     "spearman_pooled")}
            for space in runs[0]}
        print(f"  few-shot {src.name} -> {dst.name}, {shots} shots: " + "  ".join(
            f"{s}: 10%={m['within_10_pct']:.0%} rho={m['spearman_mean_ctx']:.3f}"
            for s, m in out[f"shots={shots}"].items()), flush=True)
    return out


def base_as(pred, dst: ProfileData):
    """``pred`` re-labelled for ``dst`` (no adaptation: what one gets by reusing another device's predictor)."""
    from latency.predictor import predictor_from_dict
    from latency.profile_data import profile_hash

    p = predictor_from_dict(pred.to_dict())
    p.profile = profile_hash(dst.meta)
    return p


def pairs(profs: list[ProfileData]) -> list[tuple[ProfileData, ProfileData]]:
    """(source, target) pairs on the same CPU: the 1-thread onnxruntime profile to every other one."""
    def b(p):
        return p.meta.get("backend", {})

    out = []
    for s in profs:
        if b(s).get("name") != "onnxruntime" or b(s).get("threads") != 1:
            continue
        for t in profs:
            if t is not s and t.meta.get("device", {}).get("cpu_model") == s.meta.get("device", {}).get("cpu_model"):
                out.append((s, t))
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(results: dict) -> str:
    """The tables of benchmarks/README.md from a results file."""
    lines = ["| profile | predictor | space | n | +-5% | +-10% | MAPE % | RMSE ms | rho min / mean per Context | "
             "rho FLOPs | rho params |", "|" + "---|" * 11]
    for prof, r in results["profiles"].items():
        for kind, k in r["kinds"].items():
            for space, m in k["spaces"].items():
                lines.append(f"| {prof} | {kind} | {space} | {m['n']} | {_pct(m['within_5_pct'])} | "
                             f"{_pct(m['within_10_pct'])} | {_f(m['mape_pct'], 1)} | {_f(m['rmse_ms'])} | "
                             f"{_f(m['spearman_min_ctx'])} / {_f(m['spearman_mean_ctx'])} | "
                             f"{_f(m['spearman_flops_mean_ctx'])} | {_f(m['spearman_params_mean_ctx'])} |")
    colds = [(p, r["kinds"][results["default_kind"]].get("cold")) for p, r in results["profiles"].items()
             if results["default_kind"] in r["kinds"]]
    if any(c for _, c in colds):
        lines += ["", f"Cold-weights term of {results['default_kind']} (knee: MB of weights read per run beyond "
                  "which a model pays slope(ctx) ms per MB more; `-`: cross-validation chose none):", "",
                  "| profile | space | knee MB | ms per MB at b1 s32 / b1 s128 / b8 s128 |", "|---|---|---|---|"]
        for prof, c in colds:
            for space, t in (c or {}).items():
                lines.append(f"| {prof} | {space} | {_f(t['knee_mb'], 0) if t else '-'} | "
                             + (" / ".join(_f(cold_slope(t["slope"], tuple(t["basis"]), Context(b, s)), 4)
                                          for b, s in ((1, 32), (1, 128), (8, 128))) if t else "-") + " |")
    lines += ["", "Interpolation (the seq_len removed from the table and the calibration rows, test rows at it):", "",
              "| profile | held-out | predictor | space | n | +-5% | +-10% | MAPE % | rho min / mean |", "|" + "---|" * 9]
    for prof, r in results["profiles"].items():
        for held, res in r["interpolation"].items():
            for kind, sp in res.items():
                for space, m in sp.items():
                    lines.append(f"| {prof} | {held} | {kind} | {space} | {m['n']} | {_pct(m['within_5_pct'])} | "
                                 f"{_pct(m['within_10_pct'])} | {_f(m['mape_pct'], 1)} | "
                                 f"{_f(m['spearman_min_ctx'])} / {_f(m['spearman_mean_ctx'])} |")
    lines += ["", "| profile | op measurements | e2e measurements (calibration / test) | profiling minutes | "
              "e2e re-measured: within +-5% / +-10% (n) |", "|---|---|---|---|---|"]
    for prof, r in results["profiles"].items():
        c, rep = r["cost"], (r.get("repeatability") or {}).get("e2e")
        rep_s = f"{_pct(rep['within_5_pct'])} / {_pct(rep['within_10_pct'])} ({rep['n']})" if rep else "-"
        lines.append(f"| {prof} | {c['op_measurements']} | {c['e2e_measurements']} ({c['e2e_calibration']} / "
                     f"{c['e2e_test']}) | {c['profile_minutes'] if c['profile_minutes'] is not None else '-'} | "
                     f"{rep_s} |")
    found = [(p, r["search_found"]) for p, r in results["profiles"].items() if r.get("search_found")]
    if found:
        lines += ["", "Architectures returned by the budgeted search (`results/budget_fidelity*.json`, measured in "
                  "the profile's protocol):",
                  "", "| profile | predictor | space | n | +-5% | +-10% | MAPE % | bias % |", "|" + "---|" * 8]
        for prof, res in found:
            for kind, sp in res.items():
                for space, m in sp.items():
                    lines.append(f"| {prof} | {kind} | {space} | {m['n']} | {_pct(m['within_5_pct'])} | "
                                 f"{_pct(m['within_10_pct'])} | {_f(m['mape_pct'], 1)} | {_f(m['bias_pct'], 1)} |")
    sets = [(p, r["by_set"]) for p, r in results["profiles"].items() if r.get("by_set")]
    if sets:
        lines += ["", f"Held-out rows by the set their architecture was measured in ({results['default_kind']}):", "",
                  "| profile | set | space | n | +-5% | +-10% | MAPE % | bias % |", "|" + "---|" * 8]
        for prof, res in sets:
            for name, sp in res.items():
                for space, m in sp.items():
                    lines.append(f"| {prof} | {name} | {space} | {m['n']} | {_pct(m['within_5_pct'])} | "
                                 f"{_pct(m['within_10_pct'])} | {_f(m['mape_pct'], 1)} | {_f(m['bias_pct'], 1)} |")
    if results["few_shot"]:
        lines += ["", "| source -> target | shots | space | +-10% | +-5% | MAPE % | rho mean per Context |",
                  "|---|---|---|---|---|---|---|"]
        for fs in results["few_shot"]:
            for label in ["no_adaptation", *[k for k in fs if k.startswith("shots=")], "target_full_profile"]:
                if label not in fs:
                    continue
                for space, m in fs[label].items():
                    lines.append(f"| {fs['source']} -> {fs['target']} | {label} | {space} | "
                                 f"{_pct(m['within_10_pct'])} | {_pct(m['within_5_pct'])} | {_f(m['mape_pct'], 1)} | "
                                 f"{_f(m['spearman_mean_ctx'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="*", help="profile folders (default: every one under profiles/)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--markdown", action="store_true", help="print the README tables of an existing --out file")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    folders = [Path(p) for p in args.profiles] or sorted(
        p for p in (ROOT / "profiles").iterdir() if (p / "profile.json").is_file())
    profs = []
    for f in folders:
        prof = read_profile(f)
        if prof.meta.get("status") not in (None, "complete"):
            print(f"skipping {f}: status {prof.meta.get('status')!r}")
            continue
        profs.append(prof)
    results = {"default_kind": DEFAULT_KIND, "profiles": {}, "few_shot": []}
    for prof in profs:
        print(f"{prof.name} ({prof.backend_label()})", flush=True)
        results["profiles"][prof.name] = accuracy(prof)
        results["profiles"][prof.name]["search_found"] = search_found(prof)
        results["profiles"][prof.name]["by_set"] = by_set(prof)
    for src, dst in pairs(profs):
        results["few_shot"].append(few_shot(src, dst))
    atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
