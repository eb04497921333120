"""How well whole-model latencies repeat between full profiles of one machine -> benchmarks/results/sitting_agreement.json

A predictor is judged against one profile's ``test`` rows, each a measurement taken in that profile's process, at
that hour. Whether "+-5 %" means anything depends on how well the same rows repeat in another sitting. Give two or
more profile folders of one device, backend and thread count (full profiles taken at different times; ``REV:PATH``
reads a committed version of a profile from git). Per space, on the ``test`` rows they share (same architecture and
Context):

* **pairs**: the speed factor between two sittings (the median of B / A), and with it divided out: the median and
  p90 of |B / A - 1|, the share of rows within +-5 % / +-10 %, and the Spearman of B's rows against A's per Context
  (the minimum and mean): how well one sitting's rows rank another's (a noise-free predictor can rank better than a
  second measurement does, so this is a scale for the per-Context Spearman, not its ceiling);
* **sittings** (three or more): each sitting's own per-row noise, ``sigma_i``, from the robust spreads of the pairs'
  log ratios (``v_ij = sigma_i^2 + sigma_j^2``, solved by least squares: the three-cornered hat), and the share
  within +-5 % / +-10 % that a predictor knowing every row's true latency would reach against that sitting's rows
  (normal approximation): how far a ``test`` split measured in that sitting can judge a predictor;
* **predictors**: each profile's ``predictor.json`` against its own rows and against every other sitting's (their
  speed divided out): how it predicts another process on the same machine. A predictor fitted on one sitting shares
  that sitting's state (its op table and calibration rows were timed in the same process), so against its own rows it
  can do better than ``sigma_i`` alone allows;
* **leave one sitting out** (``--loso``, three or more): for each sitting, the others merged
  (``hwnas merge-profiles``, :mod:`latency.merge`) and fitted with the default kind, and each of the others' own
  ``predictor.json``, judged on its ``test`` rows with the speed divided out (the median of measured / predicted):
  whether a profile of several sittings predicts a new sitting better than one sitting's does.

    python benchmarks/sitting_agreement.py PROFILE_A PROFILE_B [PROFILE_C ...] [--loso] [--out FILE]

Times nothing: run it anywhere (``--loso`` fits one predictor per sitting, seconds each).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import math
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.evaluate import _spearman, metrics  # noqa: E402
from latency.profile_data import ProfileData, read_profile  # noqa: E402
from latency.stats import MAD_TO_SD  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402
from nas.spaces.ops import Context  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "sitting_agreement.json"
TOLERANCES = (0.05, 0.10)


def fail(msg: str) -> SystemExit:
    return SystemExit(f"sitting_agreement.py: {msg}")


def open_profile(spec: str, scratch: Path) -> tuple[str, ProfileData]:
    """A profile folder, or ``REV:PATH`` (a committed version, extracted from git into ``scratch``)."""
    if ":" in spec and not Path(spec).exists():
        rev, path = spec.split(":", 1)
        out = subprocess.run(["git", "-C", str(ROOT), "archive", rev, path], capture_output=True)
        if out.returncode:
            last = (out.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise fail(f"{spec}: git cannot give {path} at {rev} ({last}); give REV:PATH of a committed profile")
        dest = scratch / rev.replace("/", "_")
        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
            tar.extractall(dest, filter="data")
        folder = dest / path
    else:
        folder = Path(spec)
    try:
        return spec, read_profile(folder, need_ops=False)
    except Exception as e:  # one line, whatever the loader found
        raise fail(f"{spec}: {e}") from None


def same_machine(profs: list[tuple[str, ProfileData]]) -> None:
    """Refuse profiles of different devices, backends or thread counts: their rows do not measure one thing."""
    def ident(p: ProfileData) -> tuple:
        b, d = p.meta.get("backend") or {}, p.meta.get("device") or {}
        return b.get("name"), b.get("device"), b.get("threads"), d.get("cpu_id") or d.get("cpu_model") or d.get("gpu")

    first = ident(profs[0][1])
    for spec, p in profs[1:]:
        if ident(p) != first:
            raise fail(f"{spec} is {ident(p)}, {profs[0][0]} is {first} (backend, device, threads, CPU): give "
                       f"profiles of one machine, backend and thread count")


def arch_key(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True)


def shared_rows(profs: list[tuple[str, ProfileData]]) -> pd.DataFrame:
    """One row per (space, architecture, Context) in every profile's ``test`` split, a column of ms per profile."""
    merged = None
    for i, (_, p) in enumerate(profs):
        t = p.e2e_split("test")
        df = pd.DataFrame({"space": t["space"], "arch": [arch_key(a) for a in t["arch_json"]],
                           "batch": t["batch"].astype(int), "seq_len": t["seq_len"].astype(int),
                           f"ms{i}": t["latency_p50_ms"].astype(float)})
        df = df.drop_duplicates(["space", "arch", "batch", "seq_len"])
        merged = df if merged is None else merged.merge(df, on=["space", "arch", "batch", "seq_len"], how="inner")
    if merged is None or merged.empty:
        raise fail("the profiles share no test rows (same architecture and Context); give profiles of one space "
                   "version, profiled with the same --seed")
    return merged


def robust_sd(x: np.ndarray) -> float:
    return float(MAD_TO_SD * np.median(np.abs(x - np.median(x))))


def _pct(x: float) -> float:
    return round(100 * float(x), 2)


def pair_figures(a: np.ndarray, b: np.ndarray, ctx: list[tuple[int, int]]) -> dict:
    """B against A with the factor between them divided out (both arrays in ms, row for row)."""
    factor = float(np.median(b / a))
    rel = np.abs(b / factor / a - 1)
    rhos = {}
    for c in sorted(set(ctx)):
        idx = [i for i, k in enumerate(ctx) if k == c]
        rhos[f"{c[0]}x{c[1]}"] = _spearman(a[idx], b[idx])
    vals = [r for r in rhos.values() if r is not None]
    return {"n": int(len(a)), "factor": round(factor, 4), "median_abs_diff_pct": _pct(np.median(rel)),
            "p90_abs_diff_pct": _pct(np.quantile(rel, 0.9)),
            **{f"within_{int(100 * t)}_pct": _pct(np.mean(rel <= t)) for t in TOLERANCES},
            "log_ratio_robust_sd_pct": _pct(robust_sd(np.log(b / a))),
            "spearman_min_ctx": round(min(vals), 4) if vals else None,
            "spearman_mean_ctx": round(float(np.mean(vals)), 4) if vals else None,
            "spearman_per_ctx": {k: (round(v, 4) if v is not None else None) for k, v in rhos.items()}}


def sitting_noise(pairs: dict[tuple[int, int], float], k: int) -> list[float]:
    """Each sitting's variance from the pairs' variances ``v_ij = s_i + s_j`` (least squares; negatives to 0).

    >>> [round(math.sqrt(v), 3) for v in sitting_noise({(0, 1): 0.05, (0, 2): 0.04, (1, 2): 0.03}, 3)]
    [0.173, 0.141, 0.1]
    """
    rows, rhs = [], []
    for (i, j), v in pairs.items():
        r = [0.0] * k
        r[i] = r[j] = 1.0
        rows.append(r)
        rhs.append(v)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return [max(float(s), 0.0) for s in sol]


def ceiling(sigma: float, tol: float) -> float:
    """The share of rows a predictor of the true latency reaches within ``tol`` when a sitting's rows scatter
    around it with log-SD ``sigma`` (normal)."""
    if sigma <= 0:
        return 1.0
    return math.erf(math.log(1 + tol) / (sigma * math.sqrt(2)))


def predictor_figures(profs: list[tuple[str, ProfileData]], rows: pd.DataFrame, space: str) -> dict:
    """Each profile's predictor.json on the shared rows of every sitting (their speed against its own divided out)."""
    from latency.predictor import load_predictor
    from nas.arch import Architecture

    out = {}
    sub = rows[rows["space"] == space]
    for i, (spec, p) in enumerate(profs):
        f = p.path / "predictor.json"
        if not f.is_file():
            continue
        try:
            pred = load_predictor(f, p)
        except Exception as e:  # a stale or foreign predictor: say so in the results, judge the others
            out[spec] = {"error": str(e).splitlines()[0]}
            continue
        if space not in {s["name"] for s in pred.spaces}:
            continue
        predicted = np.array([pred.predict(Architecture.from_json(a), Context(b, s))
                              for a, b, s in zip(sub["arch"], sub["batch"], sub["seq_len"])])
        own = sub[f"ms{i}"].to_numpy()
        per = {}
        for j, (other, _) in enumerate(profs):
            meas = sub[f"ms{j}"].to_numpy()
            factor = float(np.median(meas / own))
            m = metrics(predicted, meas / factor)
            per[other] = {"factor": round(factor, 4), "within_10_pct": _pct(m["within_10_pct"]),
                          "within_5_pct": _pct(m["within_5_pct"]), "bias_pct": round(m["bias_pct"], 2)}
        out[spec] = per
    return out


def judged_at_speed(pred, prof: ProfileData) -> dict:
    """``pred`` on ``prof``'s test rows, its predictions scaled by the median of measured / predicted (the
    sitting's speed against the predictor's): per space the factor, within +-10 % / +-5 %, Spearman per Context min."""
    from latency.evaluate import evaluate, test_points

    pts = test_points(pred, prof)
    factor = float(np.median([p["measured_ms"] / p["predicted_ms"] for p in pts]))
    for p in pts:
        p["predicted_ms"] *= factor
    out = {}
    for space, r in evaluate(pred, prof, points=pts).items():
        rhos = [c["spearman"] for c in r["contexts"].values() if c["spearman"] is not None]
        out[space] = {"n": r["all"]["n"], "factor": round(factor, 4), "within_10_pct": _pct(r["all"]["within_10_pct"]),
                      "within_5_pct": _pct(r["all"]["within_5_pct"]),
                      "spearman_min_ctx": round(min(rhos), 4) if rhos else None}
    return out


def leave_one_out(profs: list[tuple[str, ProfileData]], scratch: Path) -> dict:
    """Per sitting: the other sittings merged and fitted (default kind), and each other sitting's own
    predictor.json, judged on its test rows (:func:`judged_at_speed`)."""
    from latency.merge import merge_profiles
    from latency.predictor import DEFAULT_KIND, fit, load_predictor

    out = {}
    for i, (spec, held) in enumerate(profs):
        others = [(s, p) for j, (s, p) in enumerate(profs) if j != i]
        row = {}
        for s, p in others:
            if (p.path / "predictor.json").is_file():
                try:
                    row[s] = judged_at_speed(load_predictor(p.path / "predictor.json", p), held)
                except Exception as e:  # stale or foreign: said, the rest judged
                    row[s] = {"error": str(e).splitlines()[0]}
        merged = merge_profiles([p.path for _, p in others], scratch / f"merged_without_{i}")
        row["merged: " + " + ".join(s for s, _ in others)] = judged_at_speed(
            fit(read_profile(merged["out"]), DEFAULT_KIND), held)
        out[spec] = row
    return out


def agreement(profs: list[tuple[str, ProfileData]]) -> dict:
    rows = shared_rows(profs)
    k = len(profs)
    res = {}
    for space, sub in rows.groupby("space"):
        ctx = list(zip(sub["batch"], sub["seq_len"]))
        ms = [sub[f"ms{i}"].to_numpy() for i in range(k)]
        pairs, var = {}, {}
        for i, j in itertools.combinations(range(k), 2):
            pairs[f"{profs[j][0]} vs {profs[i][0]}"] = pair_figures(ms[i], ms[j], ctx)
            var[(i, j)] = robust_sd(np.log(ms[j] / ms[i])) ** 2
        entry = {"n_rows": int(len(sub)), "pairs": pairs}
        if k >= 3:
            entry["sittings"] = {
                profs[i][0]: {"noise_sd_pct": _pct(math.sqrt(v)),
                              **{f"ceiling_within_{int(100 * t)}_pct": _pct(ceiling(math.sqrt(v), t))
                                 for t in TOLERANCES}}
                for i, v in enumerate(sitting_noise(var, k))}
        entry["predictors"] = predictor_figures(profs, rows, space)
        res[space] = entry
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="+", help="profile folders of one machine (or REV:PATH, a committed one)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--loso", action="store_true", help="leave one sitting out: the others merged and fitted, "
                    "judged on it (three or more profiles)")
    args = ap.parse_args(argv)
    if len(args.profiles) < 2:
        raise fail("give at least two profiles of one machine to compare")
    if args.loso and len(args.profiles) < 3:
        raise fail("--loso merges the sittings left in: give three or more profiles")
    with tempfile.TemporaryDirectory() as scratch:
        profs = [open_profile(s, Path(scratch)) for s in args.profiles]
        same_machine(profs)
        res = agreement(profs)
        loso = leave_one_out(profs, Path(scratch)) if args.loso else None
    doc = {"date": dt.date.today().isoformat(),
           "profiles": {s: {"created": p.meta.get("created"), "backend": p.backend_label(),
                            "protocol": {k: (p.meta.get("protocol") or {}).get(k)
                                         for k in ("e2e_visits", "e2e_session", "visit_processes", "allocator")}}
                        for s, p in profs},
           "note": "test rows shared by every profile; factors divided out per pair; noise_sd_pct from robust "
                   "spreads of the pairs' log ratios (three-cornered hat); ceiling: a predictor of the true latency "
                   "against that sitting's rows, normal approximation",
           "spaces": res, **({"leave_one_sitting_out": loso} if loso else {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    for space, r in res.items():
        print(f"{space}: {r['n_rows']} shared test rows")
        for name, f in r["pairs"].items():
            print(f"  {name}: factor {f['factor']:.3f}; then within +-5 % {f['within_5_pct']:.1f} %, +-10 % "
                  f"{f['within_10_pct']:.1f} %, median |diff| {f['median_abs_diff_pct']:.2f} %, Spearman per "
                  f"Context min {f['spearman_min_ctx']}")
        for name, s in (r.get("sittings") or {}).items():
            print(f"  {name}: own noise {s['noise_sd_pct']:.2f} % -> a perfect predictor within +-5 % "
                  f"{s['ceiling_within_5_pct']:.1f} %, +-10 % {s['ceiling_within_10_pct']:.1f} %")
        for name, per in r["predictors"].items():
            if "error" in per:
                print(f"  predictor of {name}: not judged ({per['error']})")
                continue
            cells = "; ".join(f"{o}: {v['within_5_pct']:.1f} / {v['within_10_pct']:.1f} %" for o, v in per.items())
            print(f"  predictor of {name} within +-5 / +-10 % of: {cells}")
    for held, row in (loso or {}).items():
        print(f"held out {held}:")
        for name, per in row.items():
            if "error" in per:
                print(f"  {name}: not judged ({per['error']})")
                continue
            print(f"  {name}: " + "; ".join(f"{sp} {v['within_5_pct']:.1f} / {v['within_10_pct']:.1f} % within "
                                             f"+-5 / +-10, Spearman min {v['spearman_min_ctx']}"
                                             for sp, v in per.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
