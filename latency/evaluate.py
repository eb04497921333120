"""Predictor accuracy on held-out whole architectures: shares within +-5% / +-10%, MAPE, RMSE, Spearman.

Only the ``test`` split of ``e2e.csv`` is used (never seen by any fit). For each space and Context, the rank
correlation of FLOPs and of parameter count with measured latency is reported next to the predictor's, as the
naive baselines a search would otherwise use.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from latency.profile_data import PredictorError, ProfileData
from nas.spaces.ops import Context


def _spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def metrics(pred_ms, meas_ms) -> dict:
    """Accuracy figures of predictions against measurements (both in ms)."""
    p, m = np.asarray(pred_ms, dtype=float), np.asarray(meas_ms, dtype=float)
    rel = (p - m) / m
    return {
        "n": int(len(m)),
        "within_5_pct": float(np.mean(np.abs(rel) <= 0.05)) if len(m) else None,
        "within_10_pct": float(np.mean(np.abs(rel) <= 0.10)) if len(m) else None,
        "mape_pct": float(100 * np.mean(np.abs(rel))) if len(m) else None,
        "bias_pct": float(100 * np.mean(rel)) if len(m) else None,
        "rmse_ms": float(math.sqrt(np.mean((p - m) ** 2))) if len(m) else None,
        "spearman": _spearman(p, m),
    }


def test_points(pred, profile: ProfileData, split: str = "test") -> list[dict]:
    """One dict per held-out row: space, context, measured, predicted, flops, params."""
    from nas.arch import Architecture

    df = profile.e2e_split(split)
    if df.empty:
        raise PredictorError(f"{profile.path}/e2e.csv has no '{split}' rows to evaluate on; run "
                             f"`hwnas profile --e2e N --out {profile.path}`")
    covered = {s["name"] for s in pred.spaces}
    out = []
    for i, r in df.iterrows():
        if r["space"] not in covered:
            continue
        arch = Architecture.from_json(r["arch_json"], f"{profile.path}/e2e.csv row {i}")
        ctx = Context(int(r["batch"]), int(r["seq_len"]))
        sp = pred.space(arch.space)
        flops = float(r["flops"]) if "flops" in r and not _isnan(r["flops"]) else float(sp.flops(arch, ctx))
        params = float(r["params"]) if "params" in r and not _isnan(r["params"]) else float(sp.analytic_params(arch))
        out.append({"space": arch.space, "ctx": ctx, "measured_ms": float(r["latency_p50_ms"]),
                    "predicted_ms": pred.predict(arch, ctx), "flops": flops, "params": params})
    return out


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def evaluate(pred, profile: ProfileData, split: str = "test", points: list[dict] | None = None) -> dict:
    """Accuracy per space (``all``) and per Context (``contexts``) on the held-out rows."""
    pts = points if points is not None else test_points(pred, profile, split)
    by_space: dict[str, list[dict]] = defaultdict(list)
    for p in pts:
        by_space[p["space"]].append(p)
    out = {}
    for space, rows in sorted(by_space.items()):
        ctxs: dict[Context, list[dict]] = defaultdict(list)
        for p in rows:
            ctxs[p["ctx"]].append(p)
        per_ctx = {}
        for ctx, cr in sorted(ctxs.items()):
            m = metrics([p["predicted_ms"] for p in cr], [p["measured_ms"] for p in cr])
            meas = [p["measured_ms"] for p in cr]
            m["spearman_flops"] = _spearman([p["flops"] for p in cr], meas)
            m["spearman_params"] = _spearman([p["params"] for p in cr], meas)
            m["batch"], m["seq_len"] = ctx.batch, ctx.seq_len
            m["measured_range_ms"] = [float(min(meas)), float(max(meas))]
            per_ctx[str(ctx)] = m
        out[space] = {"all": metrics([p["predicted_ms"] for p in rows], [p["measured_ms"] for p in rows]),
                      "contexts": per_ctx}
    return out


def plot(results: dict[str, list[dict]], path, title: str = "") -> None:
    """Predicted vs measured (log-log, +-10% band), one panel per (predictor kind, space)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    spaces = sorted({p["space"] for pts in results.values() for p in pts})
    if not spaces:
        return
    fig, axes = plt.subplots(len(kinds), len(spaces), figsize=(4.2 * len(spaces), 3.8 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, space in enumerate(spaces):
            ax = axes[i][j]
            pts = [p for p in results[kind] if p["space"] == space]
            ctxs = sorted({p["ctx"] for p in pts})
            colours = plt.cm.tab20(np.linspace(0, 1, max(len(ctxs), 2)))
            for ctx, colour in zip(ctxs, colours):
                cp = [p for p in pts if p["ctx"] == ctx]
                ax.scatter([p["measured_ms"] for p in cp], [p["predicted_ms"] for p in cp], s=9, label=str(ctx),
                           color=colour)
            if pts:
                lo = min(min(p["measured_ms"], p["predicted_ms"]) for p in pts) * 0.8
                hi = max(max(p["measured_ms"], p["predicted_ms"]) for p in pts) * 1.25
                xs = np.array([lo, hi])
                ax.plot(xs, xs, "k-", lw=0.8)
                ax.plot(xs, xs * 1.1, "k:", lw=0.6)
                ax.plot(xs, xs * 0.9, "k:", lw=0.6)
                ax.set_xscale("log")
                ax.set_yscale("log")
            ax.set_title(f"{kind} - {space}", fontsize=9)
            ax.set_xlabel("measured ms")
            ax.set_ylabel("predicted ms")
            ax.legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
