"""Do ops run slower inside a model whose weights outgrow the cache? -> benchmarks/results/cold_weights.json

The profile times each op in its own graph, run after run, so its weights stay in cache; a whole model reads every
layer's weights once per run. This times, with onnxruntime at one thread, a stack of ``--layers`` NAS-BERT FFN
layers of width 256 two ways: the same layer called ``--layers`` times (one set of weights, as the op table sees it)
and ``--layers`` distinct layers (a model's weights), in the profiler's shuffled rounds
(:func:`latency.measure.measure_in_rounds`), for several inner widths and Contexts.
``distinct / shared`` above 1 is what a sum of op timings misses.

    python benchmarks/cold_weights.py                 # on an otherwise quiet machine

Found on the Zen 5 host (2026-12-05), over five runs (of this script and a scratch loop): 2-17 % at 8 x inner
1024 (16.8 MB of weights) at b1-b8 with few tokens, none at b8 s128; at 8 x inner 512 (8.4 MB) 0-2 %, but up to
9 % in a run that timed the larger stacks first (the CPU reports a 32 MB L3 and a 1 MB L2). It is the gap the
default predictor leaves on wide NAS-BERT FFN models at batch 1. Not a sum over ops: it depends on the whole
model's weights.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency.backends.base import get_backend  # noqa: E402
from latency.device import fingerprint  # noqa: E402
from latency.measure import measure_in_rounds  # noqa: E402
from latency.stats import Protocol  # noqa: E402
from nas.io import atomic_write_text  # noqa: E402
from nas.spaces.ops import Context, OpSpec, build_op, get_op, op_params  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "cold_weights.json"


class Stack(nn.Module):
    """``n`` calls of FFN layers: one layer ``n`` times (``shared``) or ``n`` layers of their own."""

    def __init__(self, spec: OpSpec, n: int, shared: bool) -> None:
        super().__init__()
        one = build_op(spec)
        self.layers = nn.ModuleList([one] * n if shared else [one] + [build_op(spec) for _ in range(n - 1)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


def cache_sizes() -> dict[str, str]:
    """The caches cpu0 reports (sysfs), e.g. {"L1 Data": "48K", "L2 Unified": "1024K", "L3 Unified": "32768K"}."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            out[f"L{(d / 'level').read_text().strip()} {(d / 'type').read_text().strip()}"] = (
                (d / "size").read_text().strip())
        except OSError:
            continue
    return out


def run(args) -> dict:
    torch.manual_seed(0)
    backend = get_backend("onnxruntime", threads=1)
    protocol = replace(Protocol(), e2e_visits=args.rounds, max_visits=args.rounds)  # the profiler's rules, more rounds
    contexts = args.contexts
    rows = []
    for inner in args.inner:
        spec = OpSpec.parse(f"ffn:inner={inner}", hidden=args.hidden)
        for ctx in contexts:
            inputs = get_op("ffn").example_inputs(spec, ctx, torch.Generator().manual_seed(0))
            runnables = {name: backend.prepare(Stack(spec, args.layers, shared).eval(), inputs)
                         for name, shared in (("shared", True), ("distinct", False))}
            for r in runnables.values():
                backend.bind(r, inputs)
            got = measure_in_rounds(backend, runnables, protocol, "e2e")
            for r in runnables.values():
                r.release()
            med = {k: v["latency_p50_ms"] for k, v in got.items()}
            row = {"inner": inner, "hidden": args.hidden, "layers": args.layers, "batch": ctx.batch,
                   "seq_len": ctx.seq_len, "weights_mb": round(4e-6 * op_params(spec) * args.layers, 2),
                   "shared_ms": round(med["shared"], 4), "distinct_ms": round(med["distinct"], 4),
                   "distinct_over_shared": round(med["distinct"] / med["shared"], 4),
                   "visit_spread": {k: v["visit_spread"] for k, v in got.items()}}
            rows.append(row)
            print(f"inner {inner:5d} ({row['weights_mb']:5.1f} MB) b{ctx.batch} s{ctx.seq_len}: shared "
                  f"{row['shared_ms']:.4f} ms, distinct {row['distinct_ms']:.4f} ms, x{row['distinct_over_shared']:.3f}",
                  flush=True)
    info = backend.info()
    backend.close()
    return {"figure": "FFN stack with distinct weights over the same stack with one shared layer (onnxruntime, 1 thread)",
            "command": "python benchmarks/cold_weights.py " + " ".join(sys.argv[1:]),
            "date": dt.date.today().isoformat(), "device": fingerprint(1), "caches": cache_sizes(),
            "backend": info, "protocol": protocol.to_dict(), "rows": rows}


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def contexts(text: str) -> list[Context]:
    """``"1x32,8x128"`` -> Contexts (argparse type: a malformed list is one usage error)."""
    try:
        return [Context(*map(int, c.split("x"))) for c in text.split(",")]
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not BATCHxSEQ_LEN[,BATCHxSEQ_LEN...], e.g. 1x32,8x128") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inner", default=[512, 768, 1024], type=int_list, help="FFN inner widths, comma-separated")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--contexts", default=contexts("1x32,1x128,8x32,8x128"), type=contexts,
                    help="BATCHxSEQ_LEN, comma-separated")
    ap.add_argument("--rounds", type=int, default=7, help="shuffled visits of each stack (latency.measure.measure_in_rounds)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    atomic_write_text(Path(args.out), json.dumps(run(args), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
