"""NAS-BERT, one training for four budgets -> benchmarks/results/nasbert.json (resumable: run the same command again).

Stages (``--stage``), each skipped when its outputs exist (every training stage checkpoints and resumes):

1. ``search``: the laptop recipe on WikiText-2 (``../shared/data/wikitext-2`` valid + test) with the packaged
   all-MiniLM-L6-v2 as teacher, 4 budgets at batch 1, seq_len 128 on the profile; not measured (timing waits for
   a quiet machine).
2. ``baselines``: per budget, the hand-designed uniform BERT of the ``nasbert`` space (L BERT layers = MHA + FFN
   pairs at one hidden size h, h/32 heads, FFN 4h, the other layers identity; BERT-style, like the paper's BERT60 ..
   BERT5) whose predicted latency is closest to the chosen model's, saved with the same teacher-initialised
   embedding and random layers.
3. ``finetune``: every NAS-BERT model and every baseline re-distilled on the same corpus for the same number of
   steps (``--repretrain-steps``; NAS-BERT models start from the supernet's weights, baselines from scratch: that
   is the method's claim), then fine-tuned with logit KD on SST-2 (a stated 20,000-sentence stratified subset of
   the training set, 1 epoch; the full dev set) and RTE (full, 5 epochs). The NAS-BERT models are also fine-tuned
   on SST-2 without re-distillation (what ``--repretrain`` buys).
4. ``measure``: every model timed in shuffled rounds with the profile's backend, threads and protocol (run only
   when nothing else heavy runs).
5. ``ddp``: a shortened search (same corpus) at 1 process (2 threads) and under torchrun with 2 processes (1 thread
   each, gloo): wall time and agreement of the supernet weights and survivors.

Run on the machine the profile describes:
``python benchmarks/nasbert_budgets.py --profile amd-epyc-2c_ort-1.31_t1 [--stage all]``
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from nas.io import atomic_write_text  # noqa: E402
from nas.spaces import Context  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CORPUS = [str(SHARED / "wikitext-2" / "valid.txt"), str(SHARED / "wikitext-2" / "test.txt")]
CTX = Context(1, 128)
TRAIN_LIMIT = {"sst2": 20000}  # a stated subset: 12 fine-tunings x 1 epoch of the full 67,349 did not fit the session
FINETUNE = {"sst2": {"epochs": 1.0, "max_len": 64, "batch_size": 32},
            "rte": {"epochs": 5.0, "max_len": 128, "batch_size": 16}}


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def search(args, measure: bool = False) -> dict:
    from nas.nasbert.run import run_nasbert

    return run_nasbert(CORPUS, args.profile, args.budgets, args.run, CTX, measure=measure, progress=True)


def uniform_berts(space) -> list:
    """Every hand-designed uniform BERT of the space: (name, architecture)."""
    p = space.preset
    out = []
    for h in p.hiddens:
        heads = h // p.head_dim
        inner = 4 * h
        if heads not in p.heads or inner not in p.ffn_inner:
            continue
        for n in range(1, p.layers // 2 + 1):
            ops = [f"mha:head_dim={p.head_dim},heads={heads}", f"ffn:inner={inner}"] * n
            ops += ["identity"] * (p.layers - len(ops))
            choices = {f"block{b}.hidden": h for b in range(p.blocks)} | {f"layer{i}.op": o for i, o in enumerate(ops)}
            from nas.arch import Architecture

            out.append((f"bert{n}x{h}", Architecture(space.name, space.version, p.name, choices)))
    return out


def baselines(args, report: dict) -> dict:
    """Per budget, the uniform BERT closest in predicted latency to the chosen model, saved ready to re-distil."""
    import torch

    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from nas.adabert.supernet import init_embedding
    from nas.modeling import save_pretrained
    from nas.nasbert.run import _base_embeddings
    from nas.teacher import resolve_base

    prof = read_profile(args.profile, need_ops=False)
    pred = load_predictor(prof.path, prof)
    space = pred.space("nasbert", report["preset"])
    cost = pred.cost_matrix(space, CTX)
    cands = [(name, a, cost.value(space.indices(a))) for name, a in uniform_berts(space)]
    base = None
    out = {}
    for row in report["budgets"]:
        if not row.get("feasible"):
            continue
        name, arch, ms = min(cands, key=lambda c: abs(c[2] - row["predicted_latency_ms"]))
        folder = args.work / f"baseline_{row['budget_ms']:g}ms"
        if not (folder / "model.safetensors").is_file():
            if base is None:
                from transformers import AutoModel, AutoTokenizer

                base = AutoModel.from_pretrained(resolve_base(None))
                tok = AutoTokenizer.from_pretrained(resolve_base(None))
            torch.manual_seed(args.seed)
            model = space.build(arch)
            with torch.no_grad():
                init_embedding(model.embedding, *_base_embeddings(base))
            save_pretrained(model, arch, folder, 2, False, extra_card={"baseline": name,
                                                                         "predicted_latency_ms": ms})
            tok.save_pretrained(folder)
            arch.save(folder / "arch.json")
        out[str(row["budget_ms"])] = {"name": name, "arch": arch.to_dict(), "predicted_latency_ms": ms,
                                      "params": space.params(arch), "model_dir": str(folder)}
    return out


def teachers(args) -> dict:
    from adabert_glue import TASKS

    from nas.data import load_task
    from nas.teacher import train_teacher

    out = {}
    for name in ("sst2", "rte"):
        task = load_task(name, str(SHARED / "glue"))
        t = train_teacher(task, ROOT / "runs" / "bench" / name / "teacher", progress=True, **TASKS[name]["teacher"])
        if TRAIN_LIMIT.get(name):  # the teacher (and its cache) covers the full set; fine-tune on a stated subset
            task = load_task(name, str(SHARED / "glue"), train_limit=TRAIN_LIMIT[name], seed=args.seed)
        out[name] = (task, t)
    return out


def finetune_all(args, report: dict, base_rows: dict) -> dict:
    from nas.finetune import FinetuneConfig, finetune

    tasks = teachers(args)
    results: dict = {}
    jobs = []
    for row in report["budgets"]:
        if not row.get("feasible"):
            continue
        b = str(row["budget_ms"])
        if args.only and row["budget_ms"] not in args.only:
            continue
        both = ("sst2",) if args.sst2_only and row["budget_ms"] in args.sst2_only else ("sst2", "rte")
        jobs += [("nasbert", b, Path(row["model_dir"]), args.repretrain_steps, both),
                 ("baseline", b, Path(base_rows[b]["model_dir"]), args.repretrain_steps, both),
                 ("nasbert_no_repretrain", b, Path(row["model_dir"]), 0, ("sst2",))]
    for kind, b, folder, steps, names in jobs:
        for tname in names:
            task, teacher = tasks[tname]
            cfg = FinetuneConfig(repretrain_steps=steps, seed=args.seed, **FINETUNE[tname])
            out = args.work / "finetuned" / f"{kind}_{b}ms_{tname}"
            r = finetune(folder, task, teacher.path, out, cfg, run=args.run, progress=True)
            results.setdefault(kind, {}).setdefault(b, {})[f"{tname}_accuracy"] = r["dev_accuracy"]
            results[kind][b][f"{tname}_minutes"] = r["minutes"]
            results.setdefault("teacher_accuracy", {})[tname] = r["teacher_accuracy"]
    return results


def measure_all(args, report: dict, base_rows: dict) -> dict:
    from latency.profile_data import read_profile
    from nas.adabert.measure import measure_models
    from nas.arch import Architecture

    prof = read_profile(args.profile, need_ops=False)
    archs = {f"nasbert_{r['budget_ms']:g}": Architecture.from_dict(r["arch"]) for r in report["budgets"]
             if r.get("feasible")}
    archs |= {f"baseline_{b}": Architecture.from_dict(v["arch"]) for b, v in base_rows.items()}
    stats, diffs = measure_models(prof, CTX, {}, archs=archs)
    return {"stats": stats, "on_profile_device": not diffs, "differences": diffs}


def ddp(args) -> dict:
    """A shortened search at 1 process and at 2 torchrun processes: wall time and agreement."""
    import numpy as np
    from safetensors.torch import load_file

    short = ["--warmup-steps", "300", "--round-steps", "40", "--paths-per-bin", "16", "--keep-per-bin", "4"]
    out: dict = {"settings": " ".join(short) + " (laptop recipe otherwise; 2 blocks)"}
    for procs in (1, 2):
        folder = args.work / f"ddp_{procs}"
        cmd = ["-m", "nas.cli", "search", "nasbert", "--corpus", *CORPUS, "--profile", args.profile, "--budgets-ms",
               ",".join(f"{b:g}" for b in args.budgets), "--out", str(folder), "--no-measure", "--json", *short]
        env = {**os.environ, "OMP_NUM_THREADS": "2" if procs == 1 else "1"}
        if procs == 2:
            cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *cmd]
        if not (folder / "report.json").is_file():
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *cmd], check=True, env=env, cwd=ROOT)
            out[f"wall_minutes_{procs}"] = (time.perf_counter() - t0) / 60
            save(folder / "wall.json", {"minutes": out[f"wall_minutes_{procs}"]})
        else:
            out[f"wall_minutes_{procs}"] = load(folder / "wall.json").get("minutes")
    worst, same = 0.0, True
    for k in (0, 1):
        a = load_file(str(args.work / "ddp_1" / "supernet" / f"block{k}.safetensors"))
        b = load_file(str(args.work / "ddp_2" / "supernet" / f"block{k}.safetensors"))
        worst = max(worst, max(float((a[n] - b[n]).abs().max()) for n in a))
        sa, sb = (load(args.work / f"ddp_{p}" / "blocks" / f"block{k}.json")["survivors"] for p in (1, 2))
        same &= [s["path"] for s in sa] == [s["path"] for s in sb]
        out[f"block{k}_loss_max_rel_diff"] = float(np.max(np.abs(np.array([s["loss"] for s in sa]) -
                                                                  np.array([s["loss"] for s in sb])) /
                                                           np.array([s["loss"] for s in sa])))
    out["max_abs_weight_diff"] = worst
    out["same_survivors"] = same
    ra, rb = (load(args.work / f"ddp_{p}" / "report.json") for p in (1, 2))
    out["same_architectures"] = [r.get("arch") for r in ra["budgets"]] == [r.get("arch") for r in rb["budgets"]]
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    import pandas as pd

    if len(x) < 3:
        return None
    return float(pd.Series(x).corr(pd.Series(y), method="spearman"))


def summarise(args, res: dict) -> dict:
    rep = res.get("search", {})
    rows = []
    meas = res.get("measure", {}).get("stats", {})
    ft = res.get("finetune", {})
    for r in rep.get("budgets", []):
        if not r.get("feasible"):
            rows.append({"budget_ms": r["budget_ms"], "feasible": False, "note": r.get("note")})
            continue
        b = str(r["budget_ms"])
        m = meas.get(f"nasbert_{r['budget_ms']:g}", {})
        base = res.get("baselines", {}).get(b, {})
        bm = meas.get(f"baseline_{b}", {})
        rows.append({
            "budget_ms": r["budget_ms"], "arch": r["arch"], "params": r["params"],
            "predicted_latency_ms": r["predicted_latency_ms"], "measured_latency_ms": m.get("latency_p50_ms"),
            "budget_ratio": (m["latency_p50_ms"] / r["budget_ms"]) if m else None,
            "quality_estimate": r["quality_estimate"], "e2e_error": r["e2e_error"],
            **{k: v for k, v in ft.get("nasbert", {}).get(b, {}).items() if k.endswith("accuracy")},
            "without_repretrain": {k: v for k, v in ft.get("nasbert_no_repretrain", {}).get(b, {}).items()
                                   if k.endswith("accuracy")},
            "baseline": {**base, "measured_latency_ms": bm.get("latency_p50_ms"),
                         **{k: v for k, v in ft.get("baseline", {}).get(b, {}).items() if k.endswith("accuracy")}},
        })
    done = [r for r in rows if r.get("sst2_accuracy") is not None]
    return {
        "profile": args.profile, "batch": CTX.batch, "seq_len": CTX.seq_len, "date": time.strftime("%Y-%m-%d"),
        "machine": "AMD EPYC, 2 cores (the profile's device)", "corpus": "WikiText-2 valid + test (../shared/data)",
        "recipe": rep.get("config"), "supernet_minutes": rep.get("supernet_minutes"),
        "selection_seconds": rep.get("selection_seconds"),
        "combined_table_rows": rep.get("selection_combined_table_rows"),
        "blocks": rep.get("blocks"), "repretrain_steps": args.repretrain_steps, "finetune": FINETUNE,
        "finetune_train_limit": TRAIN_LIMIT,
        "teacher_accuracy": ft.get("teacher_accuracy"), "budgets": rows,
        "spearman_quality_vs_sst2": spearman([-r["quality_estimate"] for r in done], [r["sst2_accuracy"] for r in done]),
        "spearman_quality_vs_rte": spearman([-r["quality_estimate"] for r in done if "rte_accuracy" in r],
                                            [r["rte_accuracy"] for r in done if "rte_accuracy" in r]),
        "ddp": res.get("ddp"), "measure_on_profile_device": res.get("measure", {}).get("on_profile_device"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="amd-epyc-2c_ort-1.31_t1")
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[1.5, 3.0, 5.0, 8.0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench" / "nasbert", help="the search's run folder")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "nasbert_work",
                   help="baselines, fine-tuned models, the DDP runs")
    p.add_argument("--repretrain-steps", type=int, default=600)
    p.add_argument("--stage", default="all", choices=["search", "baselines", "finetune", "measure", "ddp", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", type=lambda s: [float(x) for x in s.split(",")], default=None,
                   help="finetune: only these budgets (a second process can take them; a last plain run gathers all)")
    p.add_argument("--sst2-only", type=lambda s: [float(x) for x in s.split(",")], default=None,
                   help="finetune: these budgets get no RTE fine-tunings (time)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    state_file = args.work / "bench.json"
    res = load(state_file)
    stages = ["search", "baselines", "finetune", "measure", "ddp"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "search":
            res["search"] = search(args)
        elif stage == "baselines":
            res["baselines"] = baselines(args, res["search"])
        elif stage == "finetune":
            res["finetune"] = finetune_all(args, res["search"], res["baselines"])
        elif stage == "measure":
            res["measure"] = measure_all(args, res["search"], res["baselines"])
            res["search"] = search(args, measure=True)  # the run's own report gets its measurements too
        elif stage == "ddp":
            res["ddp"] = ddp(args)
        save(state_file, res)
        save(RESULTS / "nasbert.json", summarise(args, res))
        print(f"stage {stage} done", file=sys.stderr)


if __name__ == "__main__":
    main()
