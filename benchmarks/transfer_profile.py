"""A new device in three minutes -> benchmarks/results/transfer.json.

For each target device that has a full profile of this machine (default: onnxruntime 2 threads and torch 1
thread, sources: the onnxruntime 1-thread profile), run what a user with a new device runs,
``hwnas profile --transfer-from SOURCE --backend B --threads T --out runs/transfer/<target>`` (timed: the minutes
the measurement took), and judge its predictor on the target's *full* profile's ``test`` split (never measured
by the transfer; rows of architectures the transfer also timed, such as the homogeneous ones, are left out):
share within +-10 % / +-5 %, MAPE, Spearman per Context (min and mean). Beside it, on the same
rows: the target's own full-profile predictor, and the older few-shot transfer (``hwnas fit --from SOURCE
--e2e-only --shots 20``, mean of 3 seeds).

Targets: >= 90 % within +-10 % and Spearman >= 0.95 per Context, in <= 3 minutes of measurement.

Run with nothing else running (it measures):
``python benchmarks/transfer_profile.py --source profiles/X_t1 --target profiles/X_t2 --target profiles/X_torch``

Each row also says where the transfer's misses come from: the same fit with parts of the transfer measurement
swapped for the target's full profile (:data:`CEILINGS`); and how fast the transfer's sitting ran against the full
profile's on the entries both measured (:func:`state_offset`), with the transfer judged again with that divided out
(``transfer_state_adjusted``): this VM's speed flips by 5-7 % within minutes. A transfer measured with the fourth
whole-model Context (since 2026-12-06) is also fitted as the design before it was (``previous_design``: the same
sitting without those rows), so the two compare on one measurement, free of the sitting's state.

``--minutes M`` asks the transfer for at most M minutes instead of hwnas's default 3 (each row records its
``budget_s`` and what the budget skipped, ``budget``).

``--rejudge`` (no measuring) fits and judges the transfer profiles of an existing ``--out`` file again with this
hwnas (e.g. after a change of the default predictor kind).

``--also-judge PROFILE`` (repeat) judges each transfer on another full profile of the same target too (another
sitting of that device, e.g. one measured with ``--visit-processes per_round``), under ``also_judged``: eager torch's
whole-model rows on this VM repeat between full profiles only to 57-81 % within +-5 %
(``benchmarks/sitting_agreement.py``), so which sitting judges a transfer moves its figures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictor_accuracy import summarise  # noqa: E402  (benchmarks/ is the script's folder)

from latency.evaluate import evaluate, test_points  # noqa: E402
from latency.predictor import DEFAULT_KIND, fit, load_predictor  # noqa: E402
from latency.profile_data import PredictorError, read_profile  # noqa: E402
from latency.transfer import fit_transfer, transfer, transfer_config  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "transfer.json"
KEYS = ("n", "within_10_pct", "within_5_pct", "mape_pct", "spearman_min_ctx", "spearman_mean_ctx")  # averaged over few-shot seeds


def from_root(path: Path) -> str:
    """A profile folder as the results file names it: relative to the repository where it lies inside it (as
    ``--rejudge`` reads it back, ``ROOT / path``), else absolute."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def judged(pred, target) -> dict:
    """Per space on the target's test split: the pooled figures and the Spearman per Context (min, mean)."""
    return summarise(evaluate(pred, target))


def unseen(target, seen: set[str]):
    """The target's profile without the whole-model rows of architectures in ``seen``."""
    from latency.profile_data import ProfileData

    return ProfileData(target.path, target.meta, target.ops, target.e2e[~target.e2e["arch_json"].isin(seen)])


def one(source, target, out_dir: Path, seed: int, minutes: float | None = None, also=()) -> dict:
    from latency.profiler import run_profile

    if (out_dir / target.name).exists():  # a finished folder would be read back, not measured: not what is timed
        sys.exit(f"transfer_profile: {out_dir / target.name} exists; move it away to time a fresh transfer")

    b = target.meta["backend"]
    cfg = transfer_config(source, b["name"], b.get("device", "cpu"), int(b["threads"]), seed=seed, minutes=minutes)
    t0 = time.perf_counter()
    summary = run_profile(cfg, out_dir / target.name, progress=True)
    new = read_profile(summary["out"])
    pred = fit_transfer(source, new)  # what the user's command does after measuring: part of its time
    pred.save(new.path / "predictor.json")
    wall = time.perf_counter() - t0
    sessions = new.meta.get("sessions", [])
    measured_s = sum(s.get("wall_s") or 0 for s in sessions)
    row = {
        "source": source.name, "target": target.name, "transfer_profile": from_root(new.path),
        "measurement_minutes": round(measured_s / 60, 2), "this_call_minutes": round(wall / 60, 2),
        "op_rows": int(len(new.ops)), "e2e_rows": int(len(new.e2e)), "grid": new.meta["grid"],
        "budget_s": cfg.protocol.budget_s, "budget": sessions[-1].get("budget") if sessions else None,
        "seconds_by_entry": sessions[-1].get("seconds") if sessions else None,
        **judge(source, target, new, pred),
    }
    row["ceilings"] = ceilings(source, target, new, row["transfer"])
    if also:
        row["also_judged"] = {e.name: judge_also(e, new, pred) for e in also}
    print(f"  measured {row['measurement_minutes']} min", flush=True)
    return row


def judge_also(extra, new, pred) -> dict:
    """``pred`` (a transfer's predictor) judged on ``extra``, another full profile of the target device, like
    :func:`judge` judges it on the target: on its test rows of architectures the transfer did not time, raw and with
    the sitting's speed against ``extra`` divided out; beside it ``extra``'s own predictor on the same rows."""
    judge_on = unseen(extra, set(new.e2e["arch_json"]))
    state = state_offset(extra, new)
    out = {"profile": from_root(extra.path), "state_offset": state, "transfer": judged(pred, judge_on),
           "full_profile": judged(fit(extra, DEFAULT_KIND), judge_on)}
    if state["e2e"]["median_ratio"]:
        out["transfer_state_adjusted"] = judged_scaled(pred, judge_on, state["e2e"]["median_ratio"])
    for label in ("transfer", "transfer_state_adjusted", "full_profile"):
        if label in out:
            print(f"  on {extra.name} {label:24s} " + "  ".join(
                f"{s}: 10%={m['within_10_pct']:.0%} 5%={m['within_5_pct']:.0%} rho_min={m['spearman_min_ctx']:.3f}"
                for s, m in out[label].items()), flush=True)
    return out


def check_also(target, extras) -> None:
    """Refuse an ``--also-judge`` profile of another backend or thread count than the target (one line)."""
    def ident(p):
        b = p.meta.get("backend") or {}
        return b.get("name"), b.get("device", "cpu"), b.get("threads")

    for e in extras:
        if ident(e) != ident(target):
            sys.exit(f"transfer_profile: --also-judge {e.path} is {ident(e)}, the target {target.path} is "
                     f"{ident(target)}; give full profiles of the target's backend, device and threads")


def state_offset(target, new) -> dict:
    """How the transfer's sitting ran against the full profile's: per table, the median of new / full over the
    entries both measured (every op at the transfer's Contexts; the homogeneous whole models, which both time, at
    its whole-model Contexts). This VM's speed flips by 5-7 % within minutes (README), and a transfer measured in
    another state than the full profile it is judged on reads that much off, whatever its predictor."""
    from latency.merge import speed_factor
    from latency.table import E2E_KEY, OPS_KEY

    out = {}
    for table, key in (("ops", OPS_KEY), ("e2e", E2E_KEY)):
        ratio, n = speed_factor(getattr(target, table), getattr(new, table), key)
        out[table] = {"n": n, "median_ratio": round(ratio, 4) if ratio is not None else None}
    return out


def judged_scaled(pred, target, factor: float) -> dict:
    """:func:`judged` with every prediction divided by ``factor`` (the sitting's :func:`state_offset`)."""
    points = test_points(pred, target)
    for p in points:
        p["predicted_ms"] /= factor
    return summarise(evaluate(pred, target, points=points))


def judge(source, target, new, pred=None) -> dict:
    """The transfer's predictor (refitted with this hwnas's default kind), the target's full-profile predictor and
    the few-shot transfer, judged on the target's test rows of architectures the transfer never measured; and the
    transfer's again with its sitting's speed against the full profile's divided out (``transfer_state_adjusted``,
    by the whole-model :func:`state_offset`). ``pred``: the transfer's predictor if already fitted."""
    pred = pred or fit_transfer(source, new)
    src_pred = load_predictor(source.path) if (source.path / "predictor.json").is_file() else fit(source)
    judge_on = unseen(target, set(new.e2e["arch_json"]))
    few = [judged(transfer(src_pred, judge_on, shots=20, seed=s), judge_on) for s in (0, 1, 2)]
    state = state_offset(target, new)
    out = {"predictor": pred.kind, "judged": dt.date.today().isoformat(), "state_offset": state,
           "transfer": judged(pred, judge_on), "full_profile": judged(fit(target, DEFAULT_KIND), judge_on),
           "few_shot_20": {space: {k: float(np.mean([f[space][k] for f in few])) for k in KEYS} for space in few[0]}}
    if state["e2e"]["median_ratio"]:
        out["transfer_state_adjusted"] = judged_scaled(pred, judge_on, state["e2e"]["median_ratio"])
    prev = previous_design(source, new)
    if prev is not None:  # the same sitting fitted as before the fourth whole-model Context: a paired comparison
        out["previous_design"] = judged(prev, judge_on)
        if state["e2e"]["median_ratio"]:
            out["previous_design_state_adjusted"] = judged_scaled(prev, judge_on, state["e2e"]["median_ratio"])
    print(f"{source.name} -> {target.name} state: ops {state['ops']['median_ratio']} (n={state['ops']['n']}), "
          f"whole models {state['e2e']['median_ratio']} (n={state['e2e']['n']}) x the full profile", flush=True)
    for label in ("transfer", "transfer_state_adjusted", "previous_design", "previous_design_state_adjusted",
                  "full_profile", "few_shot_20"):
        if label not in out:
            continue
        print(f"{source.name} -> {target.name} {label:12s} " + "  ".join(
            f"{s}: 10%={m['within_10_pct']:.0%} 5%={m['within_5_pct']:.0%} rho_min={m['spearman_min_ctx']:.3f}"
            for s, m in out[label].items()), flush=True)
    return out


PREVIOUS_CONTEXTS = 3  # until 2026-12-06 a transfer timed whole models at the first three of e2e_contexts()


def previous_design(source, new):
    """The transfer's predictor as the design before 2026-12-06 made it: the same measurement without its whole
    models at the fourth Context (middle batch x longest seq_len), so alpha is a plane (:func:`latency.transfer.
    transfer_spec`). None for a transfer measured at those three Contexts only."""
    from latency.profile_data import ProfileData
    from latency.transfer import e2e_contexts

    b, s = source.grid()
    keep = set(e2e_contexts(b, s)[:PREVIOUS_CONTEXTS])
    at = [(int(x), int(y)) in keep for x, y in zip(new.e2e["batch"], new.e2e["seq_len"])]
    if all(at):
        return None
    return fit_transfer(source, ProfileData(new.path, new.meta, new.ops, new.e2e[at]))


CEILINGS = {  # name -> (op rows the source table is scaled by, whole-model rows the layer is fitted on)
    "transfer": ("transfer", "transfer"),
    "full_op_table": ("full", "transfer"),  # every op at every grid Context: the scaling is then exact
    "full_e2e_rows": ("transfer", "full"),  # the full profile's calibration rows: every Context, more architectures
    "full_e2e_rows_at_transfer_contexts": ("transfer", "full@transfer"),
}


def ceilings(source, target, new, transfer_judged: dict) -> dict:
    """:func:`judged` of the transfer fit with its op rows and/or whole-model rows taken from the target's full
    profile instead (:data:`CEILINGS`): which half of a three-minute measurement limits it. ``transfer_judged``:
    the unswapped fit's figures (:func:`judge`'s ``transfer``), not fitted again."""
    from latency.profile_data import ProfileData

    at = {(int(x), int(y)) for x, y in zip(new.e2e["batch"], new.e2e["seq_len"])}  # where it timed whole models
    full_cal = target.e2e[target.e2e["split"] == "calibration"]

    def rows(kind: str, which: str):
        frame = {"op": (new.ops, target.ops), "e2e": (new.e2e, full_cal)}[kind]
        if which == "transfer":
            return frame[0]
        if which == "full":
            return frame[1]
        f = frame[1]  # "full@transfer"
        return f[[(int(x), int(y)) in at for x, y in zip(f["batch"], f["seq_len"])]]

    judge_on = unseen(target, set(new.e2e["arch_json"]))
    out = {"transfer": transfer_judged}
    for name, (ops, e2e) in CEILINGS.items():
        if name == "transfer":
            continue
        mixed = ProfileData(new.path, new.meta, rows("op", ops), rows("e2e", e2e))
        out[name] = judged(fit_transfer(source, mixed), judge_on)
    return out


def markdown(res: dict) -> str:
    lines = ["| source -> target | predictor | minutes measured | space | n | +-10% | +-5% | MAPE % | "
             "rho min / mean per Context |", "|" + "---|" * 9]
    for r in res["rows"]:
        state = (r.get("state_offset") or {}).get("e2e", {}).get("median_ratio")
        for key, label, minutes in (
                ("transfer", "transfer (3-minute)", r["measurement_minutes"]),
                ("transfer_state_adjusted", f"transfer, sitting's speed ({state}x) divided out", r["measurement_minutes"]),
                ("previous_design", "same sitting, design before 2026-12-06 (3 whole-model Contexts, plane)", None),
                ("previous_design_state_adjusted", "same, sitting's speed divided out", None),
                ("full_profile", "full profile", r.get("full_profile_minutes")), ("few_shot_20", "few-shot, 20 shots", None)):
            if key not in r:
                continue
            kind = f" [{r['predictor']}]" if key == "transfer" and r.get("predictor") else ""
            for space, m in r[key].items():
                lines.append(f"| {r['source']} -> {r['target']} | {label}{kind} | {minutes if minutes is not None else '-'} "
                             f"| {space} | {int(m['n'])} | {100 * m['within_10_pct']:.0f}% | {100 * m['within_5_pct']:.0f}% "
                             f"| {m['mape_pct']:.1f} | {m['spearman_min_ctx']:.3f} / {m['spearman_mean_ctx']:.3f} |")
        for name, j in (r.get("also_judged") or {}).items():
            state = (j.get("state_offset") or {}).get("e2e", {}).get("median_ratio")
            for key, label in (("transfer", "transfer"), ("transfer_state_adjusted", f"transfer, speed ({state}x) divided out"),
                               ("full_profile", "that profile's own predictor")):
                for space, m in (j.get(key) or {}).items():
                    lines.append(f"| {r['source']} -> {name} (another full profile) | {label} | - | {space} | {int(m['n'])} "
                                 f"| {100 * m['within_10_pct']:.0f}% | {100 * m['within_5_pct']:.0f}% | {m['mape_pct']:.1f} "
                                 f"| {m['spearman_min_ctx']:.3f} / {m['spearman_mean_ctx']:.3f} |")
    for r in res["rows"]:
        if not r.get("ceilings"):
            continue
        lines += ["", f"Swapped-part fits, {r['source']} -> {r['target']} ({r.get('predictor', '')}; op rows scaling "
                  "the source table / whole-model rows; CEILINGS in benchmarks/transfer_profile.py):", "",
                  "| fit | op rows | whole-model rows | space | +-10% | +-5% | rho min per Context |", "|" + "---|" * 7]
        for name, per in r["ceilings"].items():
            ops, e2e = CEILINGS.get(name, ("(retired fit)", "(retired fit)"))
            for space, m in per.items():
                lines.append(f"| {name} | {ops} | {e2e} | {space} | {100 * m['within_10_pct']:.0f}% | "
                             f"{100 * m['within_5_pct']:.0f}% | {m['spearman_min_ctx']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="the full profile to transfer from (required unless --markdown)")
    ap.add_argument("--target", action="append", help="a full profile of the new device (repeat; required unless --markdown)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "transfer"), help="where the transfer profiles go")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--seed", type=int, default=1, help="the transfer's seed (1: other sampled architectures than "
                    "the full profiles' seed 0)")
    ap.add_argument("--minutes", type=float, default=None, help="the transfer's measuring time (default: "
                    "hwnas's, 3)")
    ap.add_argument("--markdown", action="store_true", help="print the README table of an existing --out file")
    ap.add_argument("--rejudge", action="store_true", help="fit and judge the transfer profiles of an existing "
                    "--out file again, with the swapped-part fits (no measuring)")
    ap.add_argument("--also-judge", action="append", default=[], metavar="PROFILE", help="judge each transfer on this "
                    "other full profile of the target device too (repeat; no measuring)")
    args = ap.parse_args()
    also = [read_profile(p) for p in args.also_judge]
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    if args.rejudge:
        res = json.loads(Path(args.out).read_text())
        source = read_profile(args.source or ROOT / "profiles" / res["source"])
        for row in res["rows"]:
            target = read_profile(ROOT / row.get("target_path", f"profiles/{row['target']}"))
            new = read_profile(ROOT / row["transfer_profile"])
            check_also(target, also)
            pred = fit_transfer(source, new)
            row.update(judge(source, target, new, pred))
            row["ceilings"] = ceilings(source, target, new, row["transfer"])
            if also:
                row["also_judged"] = {e.name: judge_also(e, new, pred) for e in also}
            for name, m in row["ceilings"].items():
                print(f"{row['target']} {name:36s} " + "  ".join(
                    f"{s}: 10%={v['within_10_pct']:.0%} 5%={v['within_5_pct']:.0%} rho_min={v['spearman_min_ctx']:.3f}"
                    for s, v in m.items()), flush=True)
        atomic_write_text(Path(args.out), json.dumps(res, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
        return 0
    if not args.source or not args.target:
        ap.error("--source and --target are required unless --markdown")
    source = read_profile(args.source)
    rows = []
    for t in args.target:
        target = read_profile(t)
        check_also(target, also)
        row = one(source, target, Path(args.runs), args.seed, args.minutes, also)
        row["target_path"] = from_root(target.path)
        row["full_profile_minutes"] = round(sum(s.get("wall_s") or 0 for s in target.meta.get("sessions", [])) / 60, 1)
        rows.append(row)
    res = {"source": source.name, "date": dt.date.today().isoformat(), "rows": rows,
           "targets": ">= 90 % within +-10 % and Spearman >= 0.95 per Context on the target's full-profile test split, "
                      "<= 3 minutes of measurement"}
    atomic_write_text(Path(args.out), json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PredictorError as e:  # a missing, foreign or stale profile given as --source / --target / --also-judge
        sys.exit(f"transfer_profile: {e}")
