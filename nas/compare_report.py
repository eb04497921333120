"""Write a comparison (:func:`nas.compare.compare`) to a folder: ``compare.json``, ``compare.csv``, one PNG per
chart and ``report.html``, one self-contained file (images inlined as base64 PNG, no scripts, no network).

Charts: latency-vs-quality fronts of every device on one chart (each device's choices at budgets around the one
compared), the cross-latency heatmap (chosen-on x evaluated-on, as a share of the budget), the op mix per device,
and the per-op-kind breakdown of each chosen model's predicted latency on its own device.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd

from nas.io import atomic_write_bytes, atomic_write_text

CHARTS = ("fronts", "cross_latency", "op_mix", "breakdown")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def chart_fronts(fronts: dict[str, list[dict]], attrs: dict) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    for i, (name, pts) in enumerate(fronts.items()):
        pts = sorted(pts, key=lambda p: p["predicted_latency_ms"])
        ax.plot([p["predicted_latency_ms"] for p in pts], [p["quality"] for p in pts], "-o", ms=3, c=f"C{i}",
                label=name)
        c = attrs["devices"][name]
        if c.get("feasible") and c.get("quality") is not None:
            ax.scatter([c["predicted_latency_ms"]], [c["quality"]], marker="*", s=140, c=f"C{i}", zorder=5,
                       edgecolors="k", linewidths=0.5)
    ax.axvline(attrs["budget_ms"], c="k", ls="--", lw=0.8)
    ax.set_xlabel(f"predicted latency on the device (ms), batch {attrs['batch']}, seq_len {attrs['seq_len']}")
    ax.set_ylabel(attrs["quality_measure"][:60])
    ax.set_title(f"{attrs['space']}: each device's choices (stars: at {attrs['budget_ms']:g} ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def chart_cross(df: pd.DataFrame, attrs: dict) -> bytes:
    plt = _plt()
    m = df.pivot(index="chosen_on", columns="evaluated_on", values="budget_ratio")
    meas = df.pivot(index="chosen_on", columns="evaluated_on", values="measured_latency_ms")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(m.columns), 1.2 + 0.8 * len(m)))
    im = ax.imshow(m.values, cmap="RdYlGn_r", vmin=0.5, vmax=1.5)
    for i in range(len(m)):
        for j in range(len(m.columns)):
            ms = m.values[i, j] * attrs["budget_ms"]
            text = f"{ms:.2f} ms\n{m.values[i, j]:.2f}x"
            v = meas.values[i, j]
            if pd.notna(v):
                text += f"\nmeas. {v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(m.columns)), [c.replace("_", "\n", 1) for c in m.columns], fontsize=7)
    ax.set_yticks(range(len(m)), list(m.index), fontsize=7)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("chosen for")
    ax.set_title(f"predicted latency / budget ({attrs['budget_ms']:g} ms)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _png(fig)


def _bars(table: dict[str, dict[str, float]], ylabel: str, title: str, stacked: bool) -> bytes:
    plt = _plt()
    frame = pd.DataFrame(table).fillna(0.0).T  # (devices, keys)
    fig, ax = plt.subplots(figsize=(6.6, 3.8))
    frame.plot.bar(ax=ax, stacked=stacked, rot=15, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def charts(df: pd.DataFrame) -> dict[str, bytes]:
    attrs = df.attrs
    fronts = attrs["fronts"]
    ok = {n: d for n, d in attrs["devices"].items() if d.get("feasible")}
    out = {"fronts": chart_fronts(fronts, attrs)}
    if not df.empty:
        out["cross_latency"] = chart_cross(df, attrs)
    out["op_mix"] = _bars({n: d["op_mix"]["kinds"] for n, d in ok.items()}, "ops as run (count)",
                          "op mix of each device's choice", stacked=False)
    out["breakdown"] = _bars({n: d["breakdown_ms"] for n, d in ok.items()}, "predicted ms on its device",
                             "where the milliseconds go", stacked=True)
    return out


def device_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, d in df.attrs["devices"].items():
        row = {"device": name, "backend": d.get("backend"), "threads": d.get("threads"),
               "fastest_ms": round(d["fastest_ms"], 3), "feasible": d["feasible"]}
        if d.get("feasible"):
            mix = d["op_mix"]
            row.update({"predicted_ms": round(d["predicted_latency_ms"], 3), "params_m": round(d["params"] / 1e6, 2),
                        "quality": round(d["quality"], 4), "depth": mix["depth"],
                        "ops": ", ".join(f"{k} {v}" for k, v in mix["kinds"].items()),
                        "kernels": ", ".join(f"{k} {v}" for k, v in mix["kernels"].items()),
                        "widths": "/".join(map(str, mix["widths"]))})
        else:
            row["note"] = d.get("note")
        rows.append(row)
    return pd.DataFrame(rows)


def regret_table(df: pd.DataFrame) -> pd.DataFrame:
    off = df[df["chosen_on"] != df["evaluated_on"]].copy()
    cols = ["chosen_on", "evaluated_on", "predicted_latency_ms", "measured_latency_ms", "budget_ratio",
            "over_budget_pct", "unused_budget_pct", "quality_regret", "same_architecture"]
    return off[cols].round(4)


def terminal(df: pd.DataFrame) -> str:
    a = df.attrs
    lines = [f"{a['space']} at {a['budget_ms']:g} ms (batch {a['batch']}, seq_len {a['seq_len']}): {a['method']}",
             f"quality = {a['quality_measure']}", "", device_table(df).to_string(index=False)]
    if not df.empty:
        m = df.pivot(index="chosen_on", columns="evaluated_on", values="predicted_latency_ms").round(3)
        lines += ["", "predicted ms, chosen for (rows) x evaluated on (columns):", m.to_string()]
        meas = df.dropna(subset=["measured_latency_ms"])
        if len(meas):
            mm = meas.pivot(index="chosen_on", columns="evaluated_on", values="measured_latency_ms").round(3)
            lines += ["", "measured ms on this machine:", mm.to_string()]
        lines += ["", "shipping one device's model to another:", regret_table(df).to_string(index=False)]
    return "\n".join(lines)


def write_report(df: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write every output into ``out``; returns their paths by name."""
    out = Path(out)
    pngs = charts(df)
    paths = {}
    for name, data in pngs.items():
        paths[name] = atomic_write_bytes(out / f"{name}.png", data)
    body = {**df.attrs, "rows": df.to_dict("records")}
    paths["json"] = atomic_write_text(out / "compare.json", json.dumps(body, indent=1, default=str) + "\n")
    paths["csv"] = atomic_write_text(out / "compare.csv", df.to_csv(index=False))
    paths["html"] = atomic_write_text(out / "report.html", _html(df, pngs))
    return paths


def _html(df: pd.DataFrame, pngs: dict[str, bytes]) -> str:
    a = df.attrs
    imgs = "\n".join(f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
                     f"<figcaption>{k.replace('_', ' ')}</figcaption></figure>" for k, v in pngs.items())
    tables = [("Chosen per device", device_table(df))]
    if not df.empty:
        tables.append(("Predicted latency (ms): chosen for (rows) x evaluated on (columns)",
                       df.pivot(index="chosen_on", columns="evaluated_on", values="predicted_latency_ms").round(3)))
        tables.append(("Shipping one device's model to another", regret_table(df)))
    parts = "\n".join(f"<h2>{html.escape(t)}</h2>\n{tab.to_html(index=not isinstance(tab.index, pd.RangeIndex), na_rep='-')}"
                      for t, tab in tables)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hwnas compare: {html.escape(a['space'])} at {a['budget_ms']:g} ms</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}figure{{display:inline-block;margin:6px}}img{{max-width:520px}}</style>
</head><body>
<h1>hwnas compare: {html.escape(a['space'])} at {a['budget_ms']:g} ms (batch {a['batch']}, seq_len {a['seq_len']})</h1>
<p>Choice: {html.escape(a['method'])}. Quality: {html.escape(a['quality_measure'])}.</p>
{parts}
<h2>Charts</h2>
{imgs}
</body></html>
"""


__all__ = ["write_report", "terminal", "charts", "device_table", "regret_table", "CHARTS"]


def compare_args(p) -> None:
    p.add_argument("--profiles", nargs="+", required=True, metavar="PROFILE",
                   help="two or more profile folders or shipped names, each with a fitted predictor")
    p.add_argument("--space", required=True, choices=["adabert", "nasbert"])
    p.add_argument("--budget-ms", type=float, required=True, help="the latency budget, the same on every device")
    p.add_argument("--batch", type=int, default=1, help="deployment batch size (default 1)")
    p.add_argument("--seq-len", type=int, default=128, help="deployment sequence length (default 128)")
    p.add_argument("--run", default=None, help="a finished AdaBERT or NAS-BERT run to choose from (default: a "
                   "latency-only search maximising parameters, a capacity proxy)")
    p.add_argument("--out", required=True, help="folder for compare.json, compare.csv, report.html and the PNGs")
    p.add_argument("--no-measure", action="store_true", help="predicted figures only (no timing on this machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print compare.json's rows as one JSON object")


def compare_main(args) -> int:
    from nas.compare import CompareError, compare
    from nas.io import claim_run_folder
    from nas.spaces import Context

    settings = {"command": "compare", "profiles": list(args.profiles), "space": args.space,
                "budget_ms": args.budget_ms, "batch": args.batch, "seq_len": args.seq_len, "run": args.run,
                "seed": args.seed}
    out = Path(args.out)
    if (out / "config.json").is_file() and json.loads((out / "config.json").read_text()).get("command") != "compare":
        raise CompareError(f"{out} holds something other than a comparison; choose another --out")
    claim_run_folder(out, settings, CompareError)
    df = compare(args.profiles, args.space, args.budget_ms, Context(args.batch, args.seq_len), run=args.run,
                 measure=not args.no_measure, seed=args.seed)
    paths = write_report(df, out)
    if args.json:
        print(json.dumps({**df.attrs, "rows": df.to_dict("records")}, default=str))
    else:
        print(terminal(df))
        print(f"\nwrote {paths['html']}, {paths['json']}, {paths['csv']} and {len(CHARTS)} PNGs")
    return 0
