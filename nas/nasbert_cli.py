"""Handlers of ``hwnas search nasbert`` and ``hwnas finetune`` (the face; libraries never import this module)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from nas.errors import HwnasError


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def nasbert_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("nasbert", "task-agnostic NAS-BERT (then `hwnas finetune` per model)")
    g.add_argument("--corpus", nargs="+", default=None, metavar="SOURCE",
                   help="unlabelled text: files with one document or sentence per line (e.g. WikiText-2), 'demo' "
                        "(the bundled sample's sentences), or a datasets name NAME[:CONFIG] while online")
    g.add_argument("--budgets-ms", type=_floats, default=None, help="latency budgets at --batch/--seq-len, e.g. 1.5,3,5,8")
    g.add_argument("--budgets-frac", type=_floats, default=None,
                   help="instead of --budgets-ms: fractions (0..1) of the way from the fastest to the slowest "
                        "architecture the profile predicts, e.g. 0.2,0.5")
    g.add_argument("--recipe", default="laptop", choices=["laptop", "paper", "tiny"],
                   help="engine settings: laptop (default: 2 CPU cores, under an hour), paper (B=10, E=2000, m=10, "
                        "T=100), tiny (seconds; tests and demo)")
    for name, kind, text in (("groups_per_block", int, "width groups of the space per distillation block"),
                             ("warmup_steps", int, "uniform single-path steps per block before shrinking"),
                             ("round_steps", int, "training steps between shrinking rounds"),
                             ("bins", int, "B: latency bins per block"), ("paths_per_bin", int, "E: paths per bin"),
                             ("keep_per_bin", int, "m: survivors per bin"),
                             ("top_per_budget", int, "T: combinations per budget re-scored end to end"),
                             ("corpus_seq_len", int, "tokens per corpus sequence")):
        g.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"{text} (default: the recipe's)")


def nasbert_main(args: argparse.Namespace) -> int:
    from nas.configs import NASBERT_PRESETS
    from nas.nasbert.run import run_nasbert
    from nas.spaces import Context

    if not args.corpus:
        raise HwnasError("hwnas search nasbert: --corpus is required (text files, 'demo', or a datasets name)")
    if args.budgets_frac:
        from nas.engine_cli import budget_from_fraction

        if args.budgets_ms or not all(0 <= f <= 1 for f in args.budgets_frac):
            raise HwnasError("give either --budgets-ms or --budgets-frac (numbers in 0..1), not both")
        ctx = Context(args.batch, args.seq_len)
        args.budgets_ms = [round(budget_from_fraction(args.profile, args.preset, ctx, f, "nasbert"), 3)
                           for f in args.budgets_frac]
        print(f"hwnas: budgets {', '.join(f'{b:g}' for b in args.budgets_ms)} ms", file=sys.stderr)
    if not args.budgets_ms:
        raise HwnasError("hwnas search nasbert: --budgets-ms is required, e.g. --budgets-ms 1.5,3,5,8")
    if args.task or args.train or args.budget_ms is not None:
        raise HwnasError("hwnas search nasbert is task-agnostic: it takes --corpus and --budgets-ms, not --task/--train "
                         "or --budget-ms (fine-tune its models on a task with `hwnas finetune`)")
    over = {k: getattr(args, k) for k in ("groups_per_block", "warmup_steps", "round_steps", "bins", "paths_per_bin",
                                          "keep_per_bin", "top_per_budget", "batch_size", "lr")
            if getattr(args, k) is not None}
    if args.corpus_seq_len is not None:
        over["seq_len"] = args.corpus_seq_len
    if args.seed:
        over["seed"] = args.seed
    for k, v in over.items():
        if k != "lr" and v < 1:
            raise HwnasError(f"--{k.replace('_', '-')} must be at least 1, got {v}")
    cfg = dataclasses.replace(NASBERT_PRESETS[args.recipe], **over)
    r = run_nasbert(args.corpus, args.profile, args.budgets_ms, args.out, Context(args.batch, args.seq_len), cfg,
                    teacher=args.teacher, preset=args.preset, measure=not args.no_measure,
                    progress=sys.stderr.isatty(), verify=args.verify)
    if not r:  # not process 0 under torchrun
        return 0
    if args.json:
        print(json.dumps(r, default=str))
    else:
        print(format_nasbert(r, args.out))
    return 0


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def format_nasbert(r: dict, out: str) -> str:
    from nas.engine_cli import aim_lines

    lines = [f"run {out}: NAS-BERT on {r['profile']} (batch {r['batch']}, seq_len {r['seq_len']}), "
             f"{r['corpus_sequences']} corpus sequences",
             f"  supernet {r['supernet_minutes']:.1f} min over {len(r['blocks'])} blocks; selection "
             f"{r['selection_seconds']:.1f} s over {r['selection_combined_table_rows']:,} combinations",
             f"  {'budget ms':>9} {'predicted':>9} {'measured':>9} {'params':>8} {'quality':>8}  model"]
    for b in r["budgets"]:
        if not b.get("feasible"):
            lines.append(f"  {b['budget_ms']:>9g}  {b['note']}")
            continue
        lines.append(f"  {b['budget_ms']:>9g} {b['predicted_latency_ms']:>9.3f} {_fmt(b.get('measured_latency_ms'), '9.3f')}"
                     f" {b['params'] / 1e6:>7.2f}M {b['quality_estimate']:>8.4f}  {b['model_dir']}")
        if (b.get("verify") or {}).get("note"):
            lines.append(f"  {'':>9} {b['verify']['note']}")
    lines.append(f"  {r.get('measure_note', 'not measured: run again without --no-measure')}")
    lines += aim_lines(r)
    lines.append(f"  files: {out}/candidates.csv, {out}/pareto.png, {out}/report.json; fine-tune a model with "
                 "`hwnas finetune MODEL_DIR --teacher TASK_TEACHER --task ...`")
    return "\n".join(lines)


def finetune_args(p: argparse.ArgumentParser) -> None:
    from nas.data import add_data_arguments
    from nas.finetune import FinetuneConfig

    d = FinetuneConfig()
    p.add_argument("model", help="model folder (save_pretrained layout), e.g. RUN/model_3ms of `hwnas search nasbert`")
    add_data_arguments(p)
    p.add_argument("--teacher", required=True, help="task teacher folder made by `hwnas teacher` on the same data")
    p.add_argument("--out", default=None, help="folder to write (default: MODEL_<task>)")
    p.add_argument("--repretrain", action="store_true", help="re-distil the model on its NAS-BERT run's corpus first")
    p.add_argument("--repretrain-steps", type=int, default=1000, help="with --repretrain (default 1000)")
    p.add_argument("--run", default=None, help="with --repretrain: the NAS-BERT run folder (default: MODEL's parent)")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"default {d.epochs:g}")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr:g}")
    p.add_argument("--kd-weight", type=float, default=d.kd_weight, help=f"logit-KD share (default {d.kd_weight:g})")
    p.add_argument("--max-len", type=int, default=d.max_len)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def finetune_main(args: argparse.Namespace) -> int:
    from nas.data import task_from_args
    from nas.engine_cli import _quiet_libraries
    from nas.finetune import FinetuneConfig, finetune

    _quiet_libraries()
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, kd_weight=args.kd_weight,
                         max_len=args.max_len, repretrain_steps=args.repretrain_steps if args.repretrain else 0,
                         seed=args.seed)
    r = finetune(args.model, task_from_args(args), args.teacher, args.out, cfg, run=args.run,
                 progress=sys.stderr.isatty())
    if not r:
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k not in ("history", "repretrain_history")}, default=str))
    else:
        print(f"fine-tuned {args.model} on {r['task']['task']}: dev accuracy {r['dev_accuracy']:.4f} (teacher "
              f"{r['teacher_accuracy']:.4f}), {r['params'] / 1e6:.2f}M params, {r['minutes']:.1f} min")
    return 0


__all__ = ["nasbert_args", "nasbert_main", "finetune_args", "finetune_main", "format_nasbert"]
