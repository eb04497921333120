"""The ``hwnas`` command: one verb per job. Thin: it parses, calls library functions, prints.

Heavy imports happen inside the handlers so that ``hwnas --help`` is instant. Every user-facing problem is a
:class:`nas.errors.HwnasError`, printed as one line ``hwnas: error: ...`` with exit status 2.

Examples:
    hwnas sample --space nasbert --preset small --seed 0 --out arch.json
    hwnas info arch.json --batch 1 --seq-len 128 --json
    hwnas export arch.json --out model.onnx
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from latency.allocator import ALLOCATORS
from latency.stats import PROBES, VISIT_PROCESSES
from nas.errors import HwnasError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None], str]] = {}


def command(name: str, help: str, example: str = ""):
    """Register ``fn(args)`` as ``hwnas NAME``; then ``fn.arguments(adder)`` sets the function adding its options."""

    def deco(fn):
        text = help + (f"\n\nexample:\n  {example}" if example else "")
        COMMANDS[name] = (lambda p: None, fn, text)
        fn.arguments = lambda adder: COMMANDS.__setitem__(name, (adder, fn, text))
        return fn

    return deco


def emit(obj: dict, as_json: bool, text: str | None = None) -> None:
    """Print ``obj`` as one JSON object (``--json``) or ``text`` (default: key: value lines)."""
    if as_json:
        print(json.dumps(obj, default=str))
    else:
        print(text if text is not None else "\n".join(f"{k}: {v}" for k, v in obj.items()))


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _add_ctx(p: argparse.ArgumentParser, batch: int = 1, seq_len: int = 128) -> None:
    p.add_argument("--batch", type=int, default=batch, help=f"sequences per call (default {batch})")
    p.add_argument("--seq-len", type=int, default=seq_len, help=f"tokens per sequence (default {seq_len})")


def _delegate(module: str, func: str, args: argparse.Namespace):
    """Run ``module.func(args)``, importing the module only now (keeps ``hwnas --help`` instant)."""
    import importlib

    return getattr(importlib.import_module(module), func)(args)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# ------------------------------------------------------------------------------------------------ env / list
@command("env", "Versions, CPU, threads and GPU of this machine.", "hwnas env --json")
def cmd_env(args):
    from latency.device import fingerprint

    fp = fingerprint(threads=None)
    emit(fp, args.json)


cmd_env.arguments(lambda p: _add_json(p))


@command("list", "List registered spaces, ops or shipped profiles.", "hwnas list ops")
def cmd_list(args):
    from nas.spaces import OP_REGISTRY, SPACE_REGISTRY

    if args.what == "spaces":
        rows = {n: {"version": c.version, "presets": sorted(c.presets), "default": c.default_preset}
                for n, c in SPACE_REGISTRY.items()}
        lines = [f"{n:<9} v{r['version']}  presets: {', '.join(r['presets'])} (default {r['default']})"
                 for n, r in rows.items()]
    elif args.what == "ops":
        rows = {n: {"params": list(k.required), "fixed": k.fixed, "doc": (type(k).__doc__ or "").strip()}
                for n, k in OP_REGISTRY.items()}
        lines = [f"{n + (':' + ','.join(r['params']) if r['params'] else ''):<30} "
                 f"{'fixed ' if r['fixed'] else 'hidden'}  {r['doc']}" for n, r in rows.items()]
    else:
        from latency.table import list_profiles

        rows = {p["name"]: p for p in list_profiles()}
        width = max((len(k) for k in rows), default=0)
        lines = [f"{k:<{width}}  " + (f"unreadable: {v['error']}" if "error" in v else
                 f"{v['backend']} {v['version']}, {v['device']}, {v['threads']} thread(s), {v['gpu'] or v['cpu']}: "
                 f"{v['ops_rows']} op + {v['e2e_rows']} e2e rows, {v['status']}, {str(v['created'])[:16]}"
                 + ("  (this CPU)" if v.get("this_cpu") else "")) for k, v in rows.items()] or [
            "no profiles yet; create one with `hwnas profile`"]
    emit(rows, args.json, "\n".join(lines))


cmd_list.arguments(lambda p: (p.add_argument("what", choices=["spaces", "ops", "profiles"]), _add_json(p)))


# ------------------------------------------------------------------------------------- architectures
@command("sample", "Sample a random architecture of a space (same seed, same architecture).",
         "hwnas sample --space adabert --preset small --seed 0 --out arch.json")
def cmd_sample(args):
    from nas.spaces import get_space

    arch = get_space(args.space, args.preset).sample(args.seed)
    if args.out:
        arch.save(args.out)
    emit(arch.to_dict(), args.json or not args.out, f"wrote {args.out}")


def _sample_args(p):
    p.add_argument("--space", required=True, help="search space name (hwnas list spaces)")
    p.add_argument("--preset", default=None, help="space preset (default: the space's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="architecture JSON to write (default: print it)")
    _add_json(p)


cmd_sample.arguments(_sample_args)


@command("info", "Parameters, FLOPs and op counts of an architecture.", "hwnas info arch.json --seq-len 128 --json")
def cmd_info(args):
    from nas.report import arch_info, format_info

    info = arch_info(args.arch, args.batch, args.seq_len, num_labels=args.num_labels)
    emit(info, args.json, format_info(info))


cmd_info.arguments(lambda p: (p.add_argument("arch"), _add_ctx(p),
                              p.add_argument("--num-labels", type=int, default=2), _add_json(p)))


@command("export", "Export an architecture (random or trained weights) to ONNX.",
         "hwnas export arch.json --out model.onnx")
def cmd_export(args):
    from nas.export import export_cli

    emit(export_cli(args.arch, args.out, weights=args.weights, num_labels=args.num_labels, pair=args.pair), args.json)


cmd_export.arguments(lambda p: (
    p.add_argument("arch"), p.add_argument("--out", required=True), p.add_argument("--weights", default=None,
    help="folder of a trained model (save_pretrained layout) whose weights to export"),
    p.add_argument("--num-labels", type=int, default=2), p.add_argument("--pair", action="store_true",
    help="sentence-pair input (token_type_ids)"), _add_json(p)))


# --------------------------------------------------------------------------------------------- latency
@command("profile", "Time every candidate op (and whole sampled architectures) on this device into a profile folder.",
         "hwnas profile --backend onnxruntime --threads 1 --space adabert,nasbert --out profiles/mycpu --quick")
def cmd_profile(args):
    return _delegate("latency.profile_cli", "profile_main", args)


def _profile_args(p):
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime | torch")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, fixed and recorded (default 1)")
    p.add_argument("--space", default="adabert,nasbert", help="comma-separated spaces to cover")
    p.add_argument("--preset", default=None, help="space preset (default: each space's default)")
    p.add_argument("--batch", type=_ints, default=None, help="batch sizes (default 1,8,32)")
    p.add_argument("--seq-len", type=_ints, default=None, help="sequence lengths (default 32,64,128,256)")
    p.add_argument("--e2e", type=int, default=None, help="whole sampled architectures per space")
    p.add_argument("--out", required=True, help="profile folder to write (resumed if it exists)")
    p.add_argument("--quick", action="store_true", help="reduced grid, about a minute (demo, tests)")
    p.add_argument("--search-like", action=argparse.BooleanOptionalAction, default=None,
                   help="also time homogeneous, extreme and latency-searched architectures whole, for the "
                        "calibration (default: on, off with --quick)")
    p.add_argument("--force-new", action="store_true", help="start a new folder if OUT holds another profile")
    p.add_argument("--transfer-from", default=None, metavar="PROFILE",
                   help="a new device in about 3 minutes: time PROFILE's ops at the corners and middles of its "
                        "grid and a few whole models here, and fit a predictor from both (writes OUT/predictor.json)")
    p.add_argument("--minutes", type=float, default=None,
                   help="with --transfer-from: measure for at most this many minutes (default 3, at least 2); op "
                        "visits and retakes are skipped as the end nears, the whole models are always measured")
    p.add_argument("--statistic", choices=("median", "min"), default=None,
                   help="an entry's latency from its visits: the median of their medians (default), or the fastest "
                        "visit's (a machine whose speed drifts in bursts, e.g. a shared GPU host); recorded in the "
                        "protocol")
    p.add_argument("--allocator", choices=ALLOCATORS, default=None,
                   help="the C allocator while measuring: no_mmap (default: glibc malloc keeps every block in its "
                        "heap, so eager torch's runs take no fresh pages; deploy with the same setting) or default "
                        "(glibc's own, as a process that sets nothing runs); recorded in the protocol")
    p.add_argument("--visit-processes", choices=VISIT_PROCESSES, default=None,
                   help="one (default): every visit in this process; per_round: each round of visits in a fresh "
                        "process, so an entry's visits sample as many processes (eager torch draws a speed per "
                        "process and shape); recorded in the protocol")
    p.add_argument("--probe", choices=PROBES, default=None,
                   help="matmul (default on a CPU): time a fixed matmul beside every visit and scale the visit to "
                        "the profile's reference speed, dividing out the machine's swings of a few per cent within "
                        "seconds (a VM's); none (default on a GPU): raw visits; recorded in the protocol")
    p.add_argument("--close-partial", default=None, metavar="REASON",
                   help="close the interrupted profile OUT without measuring (its device is gone): retest and "
                        "roofline from what was measured, status partial with REASON; the same command without "
                        "this flag on its device still resumes it")
    p.add_argument("--seed", type=int, default=0)
    _add_json(p)


cmd_profile.arguments(_profile_args)


@command("merge-profiles", "Merge full profiles of one machine taken in separate sittings into one (each entry the median over them).",
         "hwnas merge-profiles profiles/mycpu profiles/mycpu-evening --out profiles/mycpu-merged && "
         "hwnas fit profiles/mycpu-merged")
def cmd_merge_profiles(args):
    return _delegate("latency.profile_cli", "merge_main", args)


cmd_merge_profiles.arguments(lambda p: (
    p.add_argument("profiles", nargs="+", help="two or more full profile folders of this machine (the first sets the "
                   "speed the others are scaled to)"),
    p.add_argument("--out", required=True, help="the new profile folder (must not exist)"), _add_json(p)))


@command("measure", "Time one architecture end to end (exported model, same protocol as the profiler).",
         "hwnas measure arch.json --backend onnxruntime --threads 1 --batch 1 --seq-len 128 --json")
def cmd_measure(args):
    return _delegate("latency.profile_cli", "measure_main", args)


cmd_measure.arguments(lambda p: (
    p.add_argument("arch"), p.add_argument("--backend", default="onnxruntime"),
    p.add_argument("--device", default=None, help="cpu | cuda (default: cpu; with --profile, the profile's)"),
    p.add_argument("--threads", type=int, default=1),
    p.add_argument("--profile", default=None, help="take the backend, threads and protocol of this profile (its "
                   "whole-model rows and this measurement are then comparable)"),
    p.add_argument("--processes", type=int, default=1, help="measure in this many fresh processes, one after the "
                   "other, and report the median (eager torch draws a speed per process; default 1)"),
    _add_ctx(p), _add_json(p)))


@command("fit", "Fit a latency predictor from a profile folder (writes PROFILE/predictor.json).",
         "hwnas fit profiles/mycpu --kind lut+calibration")
def cmd_fit(args):
    return _delegate("latency.predictor_cli", "fit_cli", args)


cmd_fit.arguments(lambda p: (
    p.add_argument("profile"), p.add_argument("--kind", default=None, help="lut | lut+calibration | regression | regression+calibration | auto+calibration (default: auto+calibration: per space, the calibrated table or regression, whichever cross-validates better)"),
    p.add_argument("--from", dest="from_profile", default=None, help="adapt this profile's predictor (few-shot)"),
    p.add_argument("--e2e-only", action="store_true", help="with --from: use only PROFILE's e2e measurements"),
    p.add_argument("--shots", type=int, default=20, help="with --from: at most this many e2e measurements"),
    _add_json(p)))


@command("recheck", "Re-measure some of a profile's whole models now; --apply makes its predictor follow the drift.",
         "hwnas recheck profiles/mycpu --rows 16 --apply")
def cmd_recheck(args):
    return _delegate("latency.predictor_cli", "recheck_cli", args)


cmd_recheck.arguments(lambda p: (
    p.add_argument("profile"),
    p.add_argument("--rows", type=int, default=16, help="test-split whole-model rows to re-measure (default 16)"),
    p.add_argument("--seed", type=int, default=0, help="which rows"),
    p.add_argument("--apply", action="store_true", help="write the speed factor into PROFILE/predictor.json"),
    _add_json(p)))


@command("predict", "Predict an architecture's latency on a profiled device.",
         "hwnas predict profiles/mycpu arch.json --batch 1 --seq-len 128 --json")
def cmd_predict(args):
    return _delegate("latency.predictor_cli", "predict_cli", args)


cmd_predict.arguments(lambda p: (p.add_argument("profile"), p.add_argument("arch"), _add_ctx(p), _add_json(p)))


@command("evaluate-predictor", "Accuracy of a profile's predictor on held-out whole architectures.",
         "hwnas evaluate-predictor profiles/mycpu --json")
def cmd_evaluate(args):
    return _delegate("latency.predictor_cli", "evaluate_cli", args)


cmd_evaluate.arguments(lambda p: (
    p.add_argument("profile"), p.add_argument("--kind", default=None, help="predictor kind (default: all)"),
    p.add_argument("--plot", default=None, help="PNG of predicted vs measured (default PROFILE/predictor.png; ./NAME_predictor.png for a shipped profile)"),
    _add_json(p)))


# --------------------------------------------------------------------------------------------- engines
@command("teacher", "Fine-tune a teacher on a task, train one probe per layer, cache what search needs from it.",
         "hwnas teacher --task sst2 --data-dir ../shared/data/glue --out runs/sst2_teacher")
def cmd_teacher(args):
    return _delegate("nas.engine_cli", "teacher_main", args)


cmd_teacher.arguments(lambda p: _delegate("nas.engine_cli", "teacher_args", p))


@command("search", "Search for the most accurate model under a device latency budget: adabert (a task, a budget) or "
         "nasbert (a corpus, one model per budget).",
         "hwnas search adabert --task sst2 --data-dir ../shared/data/glue --teacher runs/sst2_teacher "
         "--profile intel-xeon-2c_ort-1.31_t1 --budget-ms 3 --out runs/sst2_3ms\n  "
         "hwnas search nasbert --corpus ../shared/data/wikitext-2/valid.txt --profile amd-epyc-2c_ort-1.31_t1 "
         "--budgets-ms 1.5,3,5,8 --out runs/nasbert")
def cmd_search(args):
    return _delegate("nas.engine_cli", "search_main", args)


cmd_search.arguments(lambda p: _delegate("nas.engine_cli", "search_args", p))


@command("finetune", "Fine-tune a saved model (e.g. a NAS-BERT run's model_<budget>) on a task with KD from a teacher.",
         "hwnas finetune runs/nasbert/model_3ms --task sst2 --data-dir ../shared/data/glue --teacher runs/sst2_teacher")
def cmd_finetune(args):
    return _delegate("nas.nasbert_cli", "finetune_main", args)


cmd_finetune.arguments(lambda p: _delegate("nas.nasbert_cli", "finetune_args", p))


@command("compare", "Compare devices: the best architecture under one budget on each, cross-evaluated, in an HTML report.",
         "hwnas compare --profiles amd-epyc-2c_ort-1.31_t1 amd-epyc-2c_torch-2.13_t1 --space nasbert --budget-ms 3 "
         "--out runs/compare")
def cmd_compare(args):
    return _delegate("nas.compare_report", "compare_main", args)


cmd_compare.arguments(lambda p: _delegate("nas.compare_report", "compare_args", p))


# ------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `hwnas VERB --help` for a verb's options and an example",
    )
    from nas import __version__

    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (adder, fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text.split("\n")[0], description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        adder(p)
        p.set_defaults(_fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_fn", None):
        parser.print_help()
        return 2
    try:
        rc = args._fn(args)
    except HwnasError as e:
        print(f"hwnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted; re-run the same command to resume where it stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hwnas list ops | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
