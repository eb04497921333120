"""``hwnas fit``, ``hwnas predict`` and ``hwnas evaluate-predictor``: parse-free handlers called by ``nas.cli``."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from latency.profile_data import PredictorError, read_profile, resolve_profile
from nas.spaces.ops import Context

log = logging.getLogger(__name__)


def _emit(obj: dict, as_json: bool, text: str) -> None:
    print(json.dumps(obj, default=str) if as_json else text)


def fit_cli(args) -> int:
    """``hwnas fit PROFILE [--kind K] [--from SRC --e2e-only --shots N]``: write ``PROFILE/predictor.json``."""
    from latency.evaluate import evaluate
    from latency.predictor import DEFAULT_KIND, fit, load_predictor

    out = resolve_profile(args.profile) / "predictor.json"
    if args.from_profile:
        from latency.transfer import transfer

        if not args.e2e_only:
            raise PredictorError("--from adapts another device's predictor from this profile's whole-model rows; "
                                 "add --e2e-only (or drop --from to fit this profile's own op table)")
        if args.kind:
            raise PredictorError("--kind applies to fitting a table; with --from the source predictor's kind is kept")
        new = read_profile(args.profile, need_ops=False)
        src_dir = resolve_profile(args.from_profile)
        src = (load_predictor(src_dir) if (src_dir / "predictor.json").is_file() else fit(src_dir, DEFAULT_KIND))
        pred = transfer(src, new, shots=args.shots, seed=getattr(args, "seed", 0))
        prof = new
    else:
        if args.e2e_only:
            raise PredictorError("--e2e-only needs --from SOURCE_PROFILE (the predictor to adapt)")
        prof = read_profile(args.profile)
        pred = fit_transfer_again(prof, args.kind) if prof.meta.get("transfer_from") else fit(prof, args.kind)
    pred.save(out)
    summary = {"predictor": pred.kind, "path": str(out), "spaces": [s["name"] for s in pred.spaces],
               "calibration_rows": pred.meta.get("calibration_rows"), "shots": pred.meta.get("shots")}
    has_test = prof.e2e is not None and (prof.e2e["split"] == "test").any()
    if has_test:
        res = evaluate(pred, prof)
        summary["test"] = {s: {k: r["all"][k] for k in ("n", "within_10_pct", "within_5_pct", "mape_pct")}
                           for s, r in res.items()}
    choice = pred.meta.get("base_choice") or {}
    if choice:
        summary["base_choice"] = choice
    under = {s["name"]: q for s in pred.spaces if (q := pred.under_q90(s["name"])) is not None}
    if under:
        summary["under_q90"] = under
    lines = [f"wrote {out} ({pred.kind})"] + [
        f"  {s}: per-op base {'table' if c['base'] == 'lut' else c['base']} (cross-validated error: table "
        f"{c['cv_error_lut']:.4f}, regression {c['cv_error_regression']:.4f}"
        f"{few if (few := _few(c)) else ''})" for s, c in sorted(choice.items())] + [
        f"  held-out {s}: n={m['n']} within10={m['within_10_pct']:.1%} within5={m['within_5_pct']:.1%} "
        f"MAPE={m['mape_pct']:.2f}%" for s, m in summary.get("test", {}).items()] + [
        f"  {s}: 9 in 10 architectures held out of the calibration measured at most {100 * q:.1f} % above their "
        "prediction (searches aim that far under a budget)" for s, q in sorted(under.items())]
    _emit(summary, args.json, "\n".join(lines))
    return 0


def _few(c: dict) -> str:
    """The note when a space had too few calibration architectures for the table to be chosen."""
    from latency.predictor import AUTO_MIN_ARCHS

    n = c.get("calibration_archs")
    if n is None or n >= AUTO_MIN_ARCHS:
        return ""
    return f"; {n} calibration architectures, under {AUTO_MIN_ARCHS}: the regression"


def recheck_cli(args) -> int:
    """``hwnas recheck PROFILE [--rows N] [--apply] [--json]``: re-measure some of the profile's whole-model rows now;
    with ``--apply``, write the speed factor into ``PROFILE/predictor.json``."""
    import datetime as dt

    from latency.measure import FAULT_WARN_PER_RUN, FAULT_WARN_SHARE, UNSTEADY_SE, recheck, speed_in_bounds
    from latency.predictor import load_predictor

    prof = read_profile(args.profile)
    pred = load_predictor(prof.path, prof)  # refuses a missing or stale predictor before anything is measured
    r = recheck(prof, args.rows, args.seed)
    drift = r["median_signed_diff_pct"]
    summary = {k: v for k, v in r.items() if k != "rows"} | {"profile": str(prof.path), "applied": False}
    if not speed_in_bounds(r["factor"]):  # the bound a predictor.json is loaded under: never write one it refuses
        raise PredictorError(f"{prof.path}'s whole models run {drift:+.1f} % (median of {r['n']}) against the profile: "
                             f"not drift but another machine or setup; profile this one (`hwnas profile "
                             f"--transfer-from {prof.path} --out NEW`)")
    if args.apply:
        pred.set_speed(r, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        pred.save(prof.path / "predictor.json")
        summary["applied"] = True
    lines = [f"{prof.name}: {r['n']} whole-model rows re-measured: {drift:+.2f} % against the profile (median; "
             f"|diff| median {r['median_abs_diff_pct']:.2f} %, p90 {r['p90_abs_diff_pct']:.2f} %; the factor's "
             f"standard error {r['factor_se_pct']:.1f} %)",
             *([f"the probe reads this machine {100 * (r['probe_vs_reference'] - 1):+.2f} % against the profile's "
                f"reference speed; with each visit scaled by it the rows read "
                f"{100 * (r['factor_at_reference'] - 1):+.2f} %"] if "probe_vs_reference" in r else []),
             f"wrote speed factor {r['factor']:.4f} into {prof.path / 'predictor.json'}" if args.apply else
             f"predictions would scale by {r['factor']:.4f}; write it with --apply (a refit drops it)"]
    if r["unsteady"]:
        lines.append(f"warning: the rows disagree on this machine's speed (the factor's standard error "
                     f"{r['factor_se_pct']:.1f} %, over {100 * UNSTEADY_SE:.1f} %): it moved while they ran, or not alike "
                     f"for every model; recheck in a few minutes before trusting the factor")
    if r["rows_faulting"]:
        lines.append(f"warning: {r['rows_faulting']} of the {r['n']} rows took at least {FAULT_WARN_PER_RUN} page faults "
                     f"per run in this process, {100 * FAULT_WARN_SHARE:.0f} % of their time or more: their time depends "
                     f"on the memory allocator's state, not only on the machine's speed (README, 'Page faults')")
    _emit(summary, args.json, "\n".join(lines))
    return 0


def fit_transfer_again(prof, kind: str | None):
    """Refit a ``--transfer-from`` profile's predictor: from its source profile, which must be unchanged."""
    from latency.profile_data import data_hash, profile_hash
    from latency.transfer import fit_transfer

    t = prof.meta["transfer_from"]
    try:
        src = read_profile(t["path"])
    except PredictorError:
        src = read_profile(t["name"])
    if profile_hash(src.meta) != t["profile"] or data_hash(src.path) != t["data_hash"]:
        raise PredictorError(f"{prof.path} was measured as a transfer from {t['name']}, whose tables have changed "
                             f"since; measure again with `hwnas profile --transfer-from {t['name']} --out NEW`")
    return fit_transfer(src, prof, kind)


def predict_cli(args) -> int:
    """``hwnas predict PROFILE arch.json [--batch B --seq-len S] [--json]``."""
    from latency.predictor import DEFAULT_KIND, fit, load_predictor
    from nas.arch import Architecture

    arch = Architecture.load(args.arch)
    prof_dir = resolve_profile(args.profile)
    notes: list[str] = []
    if (prof_dir / "predictor.json").is_file():
        pred = load_predictor(prof_dir)
    else:
        pred = fit(prof_dir, DEFAULT_KIND)
        notes.append(f"no {prof_dir}/predictor.json: fitted the default '{DEFAULT_KIND}' predictor in memory "
                     f"(save it with `hwnas fit {prof_dir}`)")
    ctx = Context(args.batch, args.seq_len)
    quiet = logging.getLogger("latency.predictor")
    level, quiet.level = quiet.level, logging.ERROR  # the warnings go into the output below instead
    try:
        sp = pred.space(arch.space, arch.preset, arch.version)
        notes += pred.check_context(ctx, sp)
        ms = pred.predict(arch, ctx)
    finally:
        quiet.setLevel(level)
    obj = {"latency_ms": ms, "predictor": pred.kind, "batch": ctx.batch, "seq_len": ctx.seq_len,
           "space": arch.space, "profile": str(prof_dir), "warnings": notes, "under_q90": pred.under_q90(arch.space)}
    speed = f", speed x{pred.speed:.3f} since {pred.meta['speed'].get('checked')}" if pred.speed != 1.0 else ""
    if speed:
        obj["speed"] = pred.meta["speed"]
    q = obj["under_q90"]
    band = f"; 9 in 10 held-out architectures measured at most {100 * q:.1f} % above" if q is not None else ""
    _emit(obj, args.json, f"{ms:.4f} ms  ({pred.kind}, batch {ctx.batch}, seq_len {ctx.seq_len}{speed}{band})")
    for n in notes if not args.json else []:
        print(f"hwnas: warning: {n}", file=sys.stderr)
    return 0


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def evaluate_cli(args) -> int:
    """``hwnas evaluate-predictor PROFILE [--kind K] [--plot PNG] [--json]``: every kind on the test split."""
    from latency.evaluate import evaluate, plot, test_points
    from latency.predictor import DEFAULT_KIND, KINDS, fit, load_predictor

    prof_dir = resolve_profile(args.profile)
    saved = (prof_dir / "predictor.json").is_file()
    prof = read_profile(prof_dir, need_ops=False)
    if args.kind and args.kind != "saved" and args.kind not in KINDS:
        raise PredictorError(f"unknown predictor kind {args.kind!r}; choose one of {', '.join(KINDS)} or 'saved'")
    kinds = [args.kind] if args.kind else ([*KINDS] if prof.ops is not None else []) + (["saved"] if saved else [])
    if not kinds:
        raise PredictorError(f"{prof_dir}: no op table and no predictor.json; fit one with `hwnas fit {prof_dir} "
                             f"--from OTHER --e2e-only`")
    if prof.ops is None and any(k != "saved" for k in kinds):
        raise PredictorError(f"{prof_dir}: no op table (ops.csv) to fit {kinds} on; evaluate --kind saved")
    results, points = {}, {}
    for kind in kinds:
        pred = load_predictor(prof_dir, prof) if kind == "saved" else fit(prof, kind)
        label = f"saved ({pred.kind})" if kind == "saved" else kind
        pts = test_points(pred, prof)
        points[label] = pts
        results[label] = evaluate(pred, prof, points=pts)
    png = Path(args.plot) if args.plot else _default_plot(prof_dir)
    plot(points, png, title=f"{prof_dir.name}: predicted vs measured (held-out architectures)")
    obj = {"profile": str(prof_dir), "backend": prof.meta.get("backend", {}), "default_kind": DEFAULT_KIND,
           "plot": str(png), "results": results}
    lines = [f"{prof_dir.name}  (held-out architectures; plot: {png})",
             f"{'predictor':28s} {'space':8s} {'context':10s} {'n':>4s} {'+-5%':>6s} {'+-10%':>6s} {'MAPE%':>6s} "
             f"{'RMSE ms':>8s} {'rho':>6s} {'rhoFLOP':>7s} {'rhoPar':>6s}"]
    for label, res in results.items():
        for space, r in res.items():
            for cname, m in [("all", r["all"]), *r["contexts"].items()]:
                lines.append(
                    f"{label:28s} {space:8s} {cname:10s} {m['n']:4d} {_fmt(m['within_5_pct'], True):>6s} "
                    f"{_fmt(m['within_10_pct'], True):>6s} {_fmt(m['mape_pct']):>6s} {_fmt(m['rmse_ms']):>8s} "
                    f"{_fmt(m['spearman']):>6s} {_fmt(m.get('spearman_flops')):>7s} "
                    f"{_fmt(m.get('spearman_params')):>6s}")
    _emit(obj, args.json, "\n".join(lines))
    return 0


def _default_plot(prof_dir: Path) -> Path:
    """``PROFILE/predictor.png``, except for a shipped profile (package data): then ``./<name>_predictor.png``."""
    from latency.table import shipped_root

    if prof_dir.resolve().parent == shipped_root().resolve():
        return Path.cwd() / f"{prof_dir.name}_predictor.png"
    return prof_dir / "predictor.png"
