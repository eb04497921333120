"""How well a predictor knows its own error: the margin searches aim under a budget -> results/aim_margin.json.

A fitted calibration records, per space, ``cv_under_q90``: 9 in 10 architectures held out of the fit (whole, by
cross-validation over the calibration rows only) measured at most that fraction of their latency above their
prediction. AdaBERT and NAS-BERT aim their predicted latency at most ``1 - cv_under_q90`` of the budget
(:func:`latency.predictor.aim`), so that a model meets its budget when measured, not only as predicted. This
benchmark checks the estimate against rows it never saw, per profile and space:

* the ``test`` split (never used for fitting): the share of rows measured more than ``cv_under_q90`` above their
  prediction, i.e. that would miss a budget aimed at its top (the estimate's target: 10 %), against the share
  beyond the fixed 1.5 % margin searches used before;
* the architectures budgeted searches returned (``results/budget_fidelity*.json`` of the profile), the same shares.

It reads each profile's saved ``predictor.json`` (no refit, nothing timed). Extra profile folders (e.g. the quick
profile ``make demo`` writes to ``runs/demo/profile``) may be named; default: every shipped profile. A transfer
folder (``hwnas profile --transfer-from``) has no ``test`` split of its own: ``--judge-on FULL_PROFILE`` judges the
named predictors on that profile's ``test`` rows instead, leaving out the architectures each one timed.

Run: ``python benchmarks/aim_margin.py [PROFILE ...] [--judge-on FULL_PROFILE]``; ``--markdown`` prints the README
table of ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from predictor_accuracy import search_points, search_rows  # noqa: E402

from latency.evaluate import test_points  # noqa: E402
from latency.predictor import load_predictor  # noqa: E402
from latency.profile_data import read_profile  # noqa: E402
from nas.configs import NasBertConfig, SearchConfig  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "aim_margin.json"
OLD_MARGIN = SearchConfig().margin  # the fixed top margin of the search window before the aim


def shares(points: list[dict], q: float | None) -> dict:
    """Held-out under-prediction ``(measured - predicted) / measured`` of ``points``: its 90th percentile and the
    shares beyond ``q`` and beyond the old fixed margin."""
    e = np.array([(p["measured_ms"] - p["predicted_ms"]) / p["measured_ms"] for p in points])
    if not len(e):
        return {"n": 0}
    return {"n": int(len(e)), "under_q90": round(float(np.quantile(e, 0.9)), 4),
            "share_beyond_cv_q90": None if q is None else round(float(np.mean(e > q)), 4),
            "share_beyond_old_margin": round(float(np.mean(e > OLD_MARGIN)), 4)}


def one(folder: str, judge_on: str | None = None) -> dict:
    prof = read_profile(folder)
    pred = load_predictor(prof.path, prof)
    if judge_on is None:
        test = test_points(pred, prof, "test")
        found = search_points(pred, search_rows(prof))
    else:  # another profile's test rows, but for the architectures this one timed; not the search-returned rows
        # (measured in other sittings, judged with the speed factor of the other profile's predictor)
        judge = read_profile(judge_on)
        timed = set(prof.e2e["arch_json"]) if prof.e2e is not None else set()
        test = test_points(pred, replace(judge, e2e=judge.e2e[~judge.e2e["arch_json"].isin(timed)]), "test")
        found = []
    out = {"profile": prof.name, "path": str(prof.path), "kind": pred.kind, "judged_on": judge_on, "spaces": {}}
    for s in pred.spaces:
        name = s["name"]
        q = pred.under_q90(name)
        window = (SearchConfig().window_lo, 1 - OLD_MARGIN) if name == "adabert" else \
            (NasBertConfig().window_lo, NasBertConfig().window_hi)
        out["spaces"][name] = {
            "cv_under_q90": q, "aimed_window": [round(v, 4) for v in pred.aimed_window(name, window)],
            "test": shares([p for p in test if p["space"] == name], q),
            "search_returned": shares([p for p in found if p["space"] == name], q)}
    return out


def _label(p: dict) -> str:
    """A shipped profile by its name, any other by its folder (``make demo``'s quick profiles are all ``profile``)."""
    shipped = Path(p["path"]).resolve().parent == (ROOT / "profiles").resolve()
    return p["profile"] if shipped else p["path"]


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def markdown(res: dict) -> str:
    lines = ["| profile | space | cv_under_q90 (aimed window) | test rows | test q90 | test beyond cv_under_q90 | "
             "beyond 1.5 % | search-returned | beyond cv_under_q90 | beyond 1.5 % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    pooled = []
    for p in res["profiles"]:
        for name, r in p["spaces"].items():
            t, f = r["test"], r["search_returned"]
            w = r["aimed_window"]
            lines.append(f"| {_label(p)} | {name} | {_pct(r['cv_under_q90'])} ({w[0]:.3f}-{w[1]:.3f}) | {t['n']} | "
                         f"{_pct(t.get('under_q90'))} | {_pct(t.get('share_beyond_cv_q90'))} | "
                         f"{_pct(t.get('share_beyond_old_margin'))} | {f['n'] or '-'} | "
                         f"{_pct(f.get('share_beyond_cv_q90'))} | {_pct(f.get('share_beyond_old_margin'))} |")
            if t.get("share_beyond_cv_q90") is not None:
                pooled.append(t["share_beyond_cv_q90"])
    if pooled:
        lines += ["", f"Test rows beyond `cv_under_q90`, over the {len(pooled)} profile x space pairs: mean "
                      f"{_pct(float(np.mean(pooled)))}, median {_pct(float(np.median(pooled)))}, range "
                      f"{_pct(min(pooled))}-{_pct(max(pooled))} (target 10 %)."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="*", help="profile folders (default: every shipped one with a predictor.json)")
    ap.add_argument("--judge-on", default=None, help="judge on this full profile's test rows (for transfer folders)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--markdown", action="store_true", help="print the README table of an existing --out file")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    folders = args.profiles or sorted(str(p.parent) for p in (ROOT / "profiles").glob("*/predictor.json"))
    res = {"what": __doc__.split("\n\n")[0], "old_margin": OLD_MARGIN, "profiles": [one(f, args.judge_on) for f in folders]}
    atomic_write_text(Path(args.out), json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
