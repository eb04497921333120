"""AdaBERT on GLUE -> benchmarks/results/adabert_<task>.json (resumable: run the same command again after a stop).

Stages, each skipped when its outputs exist (every training stage checkpoints and resumes):

1. ``teachers``: the task teacher (all-MiniLM-L6-v2 fine-tuned) and the layer-dropping baseline (its first 2
   layers, fine-tuned the same way; the cheapest off-the-shelf alternative).
2. ``bert``: BERT-base (random-weight ``BertConfig()``) measured at the Context with the profile's backend,
   threads and protocol; the budgets are BERT-base / ratio (ratios chosen to bind in the space: see --ratios).
3. ``headline``: the search at the middle budget on the full training set (latency efficiency).
4. ``fronts``: per budget, the latency search, the same with ``--efficiency flops`` (the FLOPs budget is BERT-base's
   FLOPs / ratio: what a device-unaware search aims at), and 3 random architectures predicted within
   [0.90, 0.985] x budget trained with the same recipe; on ``--front-limit`` training examples (a stated subset).
5. ``measure``: every model above, the teacher, the 2-layer baseline and BERT-base timed in shuffled rounds
   (the profile's protocol), only when nothing else heavy runs; then the results JSON.

Run on the machine the profile describes:
``python benchmarks/adabert_glue.py --task sst2 --profile amd-epyc-2c_ort-1.31_t1 [--stage all]``
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.configs import SearchConfig  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402
from nas.spaces import Context  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "glue"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = {  # task -> teacher settings, search settings (epochs sized for 2 CPU cores)
    "sst2": {"teacher": {"epochs": 1.0, "max_len": 64}, "search": {"epochs": 3, "retrain_epochs": 3, "max_len": 64}},
    # RTE: 1,244 training pairs; lr 1e-4 for 5 epochs left the teacher at chance on dev (46.8 %, train loss 0.23)
    "rte": {"teacher": {"epochs": 10.0, "max_len": 128, "lr": 3e-5, "batch_size": 16},
            "search": {"epochs": 10, "retrain_epochs": 10, "max_len": 128, "batch_size": 32}},
}


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def teachers(task, work: Path, settings: dict) -> tuple:
    from nas.teacher import train_teacher

    t = train_teacher(task, work / "teacher", progress=True, **settings["teacher"])
    t2 = train_teacher(task, work / "teacher_2layers", progress=True, layers=2, **settings["teacher"])
    return t, t2


def measure_bert(prof, ctx: Context, work: Path) -> dict:
    """BERT-base's latency (and FLOPs) at ``ctx``, measured once and kept."""
    from nas.adabert.measure import bert_base, measure_models

    f = work.parent / f"bert_base_{prof.name}_b{ctx.batch}_s{ctx.seq_len}.json"  # shared by the tasks
    if f.is_file():
        return load(f)
    stats, diffs = measure_models(prof, ctx, {"bert": bert_base()})
    stats = stats["bert"]
    # BERT-base FLOPs at ctx: 12 layers of (4 h^2 + 2 h * 4h) * 2 per token plus attention 2 * 2 T h per token
    h, n, t = 768, ctx.batch * ctx.seq_len, ctx.seq_len
    flops = 12 * (2 * n * (4 * h * h + 8 * h * h) + 4 * n * t * h)
    out = {"latency_ms": stats["latency_p50_ms"], "p10_ms": stats["latency_p10_ms"], "p90_ms": stats["latency_p90_ms"],
           "flops": flops, "same_device": not diffs, "differences": diffs, "batch": ctx.batch, "seq_len": ctx.seq_len}
    save(f, out)
    return out


def random_under(space, cost, budget: float, n: int, seed: int) -> list:
    """``n`` random architectures predicted within [0.90, 0.985] x budget (rejection sampling, seeded)."""
    rng, out, tries = random.Random(seed), [], 0
    while len(out) < n and tries < 200000:
        tries += 1
        a = space.sample(rng)
        if 0.90 * budget <= cost.value(space.indices(a)) <= 0.985 * budget and a not in out:
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sst2", choices=sorted(TASKS))
    ap.add_argument("--profile", default="amd-epyc-2c_ort-1.31_t1")
    ap.add_argument("--ratios", default="50,80,120", help="budgets = BERT-base latency / each ratio")
    ap.add_argument("--front-limit", type=int, default=8000, help="training examples for the fronts (subset)")
    ap.add_argument("--stage", default="all", choices=["teachers", "bert", "headline", "fronts", "measure", "all"])
    ap.add_argument("--work", default=None, help="work folder (default runs/bench/TASK)")
    args = ap.parse_args()

    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from nas.adabert.run import run_adabert
    from nas.data import load_task

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work or ROOT / "runs" / "bench" / args.task)
    settings = TASKS[args.task]
    ctx = Context(1, 128)
    task = load_task(args.task, data_dir=str(SHARED))
    prof = read_profile(args.profile, need_ops=False)
    pred = load_predictor(prof.path, prof)
    space = pred.space("adabert")
    cost = pred.cost_matrix(space, ctx)
    stages = ["teachers", "bert", "headline", "fronts", "measure"] if args.stage == "all" else [args.stage]
    t0 = time.time()

    if "teachers" in stages:
        teachers(task, work, settings)
    bert = measure_bert(prof, ctx, work) if set(stages) & {"bert", "headline", "fronts", "measure"} else {}
    ratios = [int(r) for r in args.ratios.split(",")]
    budgets = {r: bert["latency_ms"] / r for r in ratios} if bert else {}
    cfg = SearchConfig(**settings["search"])
    mid = ratios[len(ratios) // 2]
    runs: dict[str, dict] = {}

    def run(name, task_, budget_ms, fixed=None, efficiency="latency", budget_cost=None, measure=False):
        c = SearchConfig(**{**cfg.__dict__, "efficiency": efficiency})
        r = run_adabert(task_, work / "teacher", prof.path, budget_ms, work / name, ctx, c, budget_cost=budget_cost,
                        measure=measure, progress=True, fixed_arch=fixed)
        runs[name] = r
        return r

    if "headline" in stages:
        run(f"headline_r{mid}", task, budgets[mid])
    front_task = load_task(args.task, data_dir=str(SHARED), train_limit=args.front_limit) \
        if len(task.train) > args.front_limit else task
    if "fronts" in stages:
        for r in ratios:
            run(f"front_latency_r{r}", front_task, budgets[r])
            run(f"front_flops_r{r}", front_task, budgets[r], efficiency="flops", budget_cost=bert["flops"] / r)
            for i, a in enumerate(random_under(space, cost, budgets[r], 3, seed=r)):
                run(f"front_random{i}_r{r}", front_task, budgets[r], fixed=a)
    if "measure" in stages:  # every finished run (a report.json), nothing trained here
        done = sorted(p.parent.name for p in work.glob("*/report.json"))
        for name in sorted(done, key=lambda n: (not n.startswith("headline"), n)):
            runs[name] = run(name, *_args_of(work / name, task, front_task), measure=True)
        t2 = _two_layer(work, prof, ctx)
        result = summarise(args, task, bert, budgets, runs, t2, work, front_task)
        save(RESULTS / f"adabert_{args.task}.json", result)
        plot_front(result, RESULTS / f"adabert_{args.task}_front.png")
        print(table(result))
        print(json.dumps(result["headline"], indent=2, default=str))
    print(f"stages {stages} done in {(time.time() - t0) / 60:.1f} min")


def _args_of(folder: Path, task, front_task):
    cfg = load(folder / "config.json")
    from nas.arch import Architecture

    fixed = Architecture.from_dict(cfg["fixed_arch"]) if cfg.get("fixed_arch") else None
    t = task if cfg["task"]["train_examples"] == len(task.train) else front_task
    return t, cfg["budget_ms"], fixed, cfg["search"]["efficiency"], cfg["budget_cost"]


def _two_layer(work: Path, prof, ctx) -> dict:
    """The layer-dropping baseline: its dev accuracy and measured latency (kept in its folder)."""
    f = work / "teacher_2layers" / "latency.json"
    if f.is_file():
        return load(f)
    from transformers import AutoModelForSequenceClassification

    from nas.adabert.measure import measure_models

    info = load(work / "teacher_2layers" / "teacher.json")
    m = AutoModelForSequenceClassification.from_pretrained(work / "teacher_2layers", attn_implementation="eager")
    stats = measure_models(prof, ctx, {"m": m})[0]["m"]
    out = {"accuracy": info["teacher_accuracy"], "latency_ms": stats["latency_p50_ms"], "params": info["params"]}
    save(f, out)
    return out


def summarise(args, task, bert, budgets, runs, two_layer, work, front_task) -> dict:
    keys = ("student_accuracy", "teacher_accuracy", "params", "flops", "budget_ms", "predicted_latency_ms",
            "measured_latency_ms", "speedup_vs_teacher", "speedup_vs_bert_base", "budget_met", "budget_ratio",
            "search_minutes", "retrain_minutes", "train_examples", "efficiency", "source")
    rows = {name: {k: r.get(k) for k in keys} | {"arch": load(work / name / "arch.json")} for name, r in runs.items()}
    head = next(v for k, v in rows.items() if k.startswith("headline"))
    return {
        "task": args.task, "profile": args.profile, "batch": 1, "seq_len": 128,
        "machine": "2 CPU cores (see the profile's device)", "date": time.strftime("%Y-%m-%d"),
        "bert_base": bert, "budgets_ms": budgets, "train_examples": len(task.train),
        "front_train_examples": len(front_task.train), "two_layer_baseline": two_layer,
        "headline": head, "runs": rows,
    }


def plot_front(result: dict, png: Path) -> None:
    """Dev accuracy against measured latency: latency-aware search, FLOPs-proxy search, random, 2-layer baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"front_latency": ("latency-aware search", "o", "C0"), "front_flops": ("FLOPs-proxy search", "s", "C1"),
              "front_random": ("random under budget", "x", "C7"), "headline": ("latency search, full data", "*", "C3")}
    seen = set()
    for name, r in result["runs"].items():
        key = next((k for k in styles if name.startswith(k)), None)
        if key is None or r.get("measured_latency_ms") is None:
            continue
        label, marker, colour = styles[key]
        ax.scatter(r["measured_latency_ms"], 100 * r["student_accuracy"], marker=marker, color=colour, s=60,
                   label=None if key in seen else label)
        seen.add(key)
    for b in result["budgets_ms"].values():
        ax.axvline(b, color="grey", lw=0.8, ls=":")
    t2 = result.get("two_layer_baseline") or {}
    if t2.get("latency_ms"):
        ax.scatter(t2["latency_ms"], 100 * t2["accuracy"], marker="D", color="C2", s=60,
                   label="MiniLM cut to 2 layers (layer dropping)")
    ax.axhline(100 * result["headline"]["teacher_accuracy"], color="C3", lw=0.8, ls="--", label="teacher (6 layers)")
    ax.set_xscale("log")
    ax.set_xlabel(f"measured latency, ms (batch {result['batch']}, seq_len {result['seq_len']}, {result['profile']})")
    ax.set_ylabel(f"{result['task']} dev accuracy, %")
    ax.set_title(f"AdaBERT on {result['task']}: budgets BERT-base / " + ", ".join(map(str, result["budgets_ms"])))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """A markdown table of every run (for benchmarks/README.md)."""
    lines = ["| run | train ex. | efficiency | budget ms | predicted ms | measured ms | measured / budget | dev acc. | "
             "params M | x BERT-base | search min | retrain min |", "|" + "---|" * 12]
    for name, r in result["runs"].items():
        m = r.get("measured_latency_ms")
        eff = r["efficiency"] if r["source"] == "search" else "random"
        ratio = "n/a" if m is None else f"{m / r['budget_ms']:.3f}"
        speed = "n/a" if r.get("speedup_vs_bert_base") is None else f"{r['speedup_vs_bert_base']:.1f}"
        lines.append(f"| {name} | {r['train_examples']} | {eff} | {r['budget_ms']:.3f} | "
                     f"{r['predicted_latency_ms']:.3f} | {'n/a' if m is None else f'{m:.3f}'} | {ratio} | "
                     f"{100 * r['student_accuracy']:.2f} | {r['params'] / 1e6:.2f} | {speed} | "
                     f"{r['search_minutes']:.1f} | {r['retrain_minutes']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
