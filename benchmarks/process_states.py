"""Does an op's speed depend on the process that runs it? -> benchmarks/results/process_states.json

A profile times every op in one process; a user's model runs in another. This starts ``--processes`` fresh
processes one after the other; each prepares every op of ``--ops`` at every Context of ``--contexts`` twice (two
objects, built alike) and times them all in the profiler's shuffled rounds (:func:`latency.measure.measure_in_rounds`,
the default protocol's op rules and allocator). Per entry: the median over processes, the share of processes that
read it 10 % / 25 % above that median, and whether the two objects of a process agree (a state of the process, not of
an object).

    python benchmarks/process_states.py                      # torch, AdaBERT's convolutions, on a quiet machine
    python benchmarks/process_states.py --backend onnxruntime --processes 12
    python benchmarks/process_states.py --ops --e2e 8 --contexts 32x128 8x256     # whole AdaBERT models only

Found on the Zen 5 host (2026-12-06, one thread, nothing else running): with torch 2.13 eager, each of AdaBERT's six
convolutions at three Contexts read more than 10 % above its median in 0-13 % of 30 fresh processes (3 % over the
18 entries), up to 1.85x (k=7 at batch 8 x seq_len 256), both objects of a process alike (median 0.4-1.1 % apart):
a state drawn per process and shape, not per object or per moment (so the full torch profile's 1.81 ms for k=5 at
batch 32 x seq_len 128, in all three of its visits minutes apart, against 0.93-0.99 ms in four transfer sittings,
is its process's draw). With oneDNN off (``torch.backends.mkldnn.enabled = False``) the op ran 12x slower and
showed none. onnxruntime 1.31, 12 processes: none; every entry within 1.02x of its median. Six whole AdaBERT
models at b32 s128 and b8 s256 (``--ops --e2e 6``), torch, 12 processes: a median 3.0 % from their median over
processes (p90 8.5 %, max 1.33x), the two objects of a process 1.9 % apart.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "process_states.json"
OPS = ("conv:dilation=1,k=3", "conv:dilation=1,k=5", "conv:dilation=1,k=7", "conv:dilation=2,k=3",
       "conv:dilation=2,k=5", "conv:dilation=2,k=7")  # AdaBERT's convolutions (``nas/spaces/ops_cnn.py``)
CONTEXTS = ("32x128", "8x256", "32x32")
OBJECTS = ("a", "b")


def parse_ctx(text: str):
    from nas.spaces.ops import Context

    try:
        b, s = (int(x) for x in text.lower().split("x"))
        return Context(b, s)
    except ValueError:
        raise SystemExit(f"process_states.py: context {text!r} is not BATCHxSEQ_LEN, e.g. 32x128") from None


def child(args) -> None:
    """One process: every op x Context x object prepared, then timed in shuffled rounds; prints one JSON line."""
    import torch

    from latency.allocator import apply_allocator
    from latency.backends.base import get_backend
    from latency.measure import EXPORT_CTX, measure_in_rounds
    from latency.stats import Protocol
    from nas.spaces.ops import OpSpec, build_op, get_op

    protocol = Protocol()
    apply_allocator(protocol.allocator)  # before anything is built, as a profile's session does
    backend = get_backend(args.backend, threads=args.threads)
    entries = {}
    for template in args.ops:
        spec = OpSpec.parse(template, hidden=args.hidden)
        for text in args.contexts:
            ctx = parse_ctx(text)
            for obj in OBJECTS:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    module = build_op(spec)
                gen = torch.Generator().manual_seed(0)
                r = backend.prepare(module, get_op(spec.kind).example_inputs(spec, EXPORT_CTX, gen))
                backend.bind(r, get_op(spec.kind).example_inputs(spec, ctx, torch.Generator().manual_seed(0)))
                entries[f"{spec.key}@{text}#{obj}"] = r
    out = {k: v["latency_p50_ms"] for k, v in measure_in_rounds(backend, entries, protocol, kind="op",
                                                                 seed=args.seed).items()}
    if args.e2e:
        from latency.journal import NUM_LABELS
        from latency.measure import token_inputs
        from latency.profiler import sample_archs
        from nas.spaces import get_space

        space = get_space(args.space)
        whole = {}
        for i, arch in enumerate(sample_archs(space, args.e2e, seed=0)):  # the same architectures in every process
            for text in args.contexts:
                for obj in OBJECTS:
                    r = backend.prepare_arch(arch, token_inputs(space, EXPORT_CTX), NUM_LABELS, seed=0)
                    backend.bind(r, token_inputs(space, parse_ctx(text)))
                    whole[f"{space.name}#{i}@{text}#{obj}"] = r
        out.update({k: v["latency_p50_ms"] for k, v in measure_in_rounds(backend, whole, protocol, kind="e2e",
                                                                         seed=args.seed).items()})
    print(json.dumps(out), flush=True)


def summarise(per_process: list[dict]) -> list[dict]:
    """Per entry (op @ Context): the median over processes (of the two objects' mean), the shares of processes above
    it by 10 % and 25 %, the slowest / median, and how far a process's two objects differ (median, max)."""
    keys = sorted({k.rsplit("#", 1)[0] for p in per_process for k in p})
    rows = []
    for key in keys:
        pairs = [(p[f"{key}#a"], p[f"{key}#b"]) for p in per_process if f"{key}#a" in p and f"{key}#b" in p]
        means = [(a + b) / 2 for a, b in pairs]
        med = statistics.median(means)
        gaps = [abs(a - b) / min(a, b) for a, b in pairs]
        rows.append({"entry": key, "processes": len(pairs), "median_ms": round(med, 4),
                     "share_10pct_slower": round(sum(m > 1.10 * med for m in means) / len(means), 3),
                     "share_25pct_slower": round(sum(m > 1.25 * med for m in means) / len(means), 3),
                     "slowest_over_median": round(max(means) / med, 3),
                     "fastest_over_median": round(min(means) / med, 3),
                     "objects_gap_median_pct": round(100 * statistics.median(gaps), 2),
                     "objects_gap_max_pct": round(100 * max(gaps), 2),
                     "per_process_ms": [round(m, 4) for m in means]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--processes", type=int, default=24)
    ap.add_argument("--ops", nargs="*", default=list(OPS), help="op templates, e.g. conv:dilation=1,k=5")
    ap.add_argument("--hidden", type=int, default=64, help="the ops' width (AdaBERT small: 64)")
    ap.add_argument("--contexts", nargs="+", default=list(CONTEXTS), help="BATCHxSEQ_LEN, e.g. 32x128")
    ap.add_argument("--e2e", type=int, default=0, help="also this many sampled whole architectures of --space")
    ap.add_argument("--space", default="adabert", help="the space of --e2e's architectures (default preset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for text in args.contexts:
        parse_ctx(text)
    if args.e2e < 0:
        raise SystemExit(f"process_states.py: --e2e must be 0 or more, got {args.e2e}")
    if not args.ops and not args.e2e:
        raise SystemExit("process_states.py: nothing to time; give --ops templates or --e2e N")
    if args.processes < 2:
        raise SystemExit("process_states.py: --processes must be at least 2 to compare processes")
    if args.child:
        return child(args)

    from latency.device import fingerprint
    from nas.io import atomic_write_text

    cmd = [sys.executable, __file__, "--child", "--backend", args.backend, "--threads", str(args.threads),
           "--hidden", str(args.hidden), "--e2e", str(args.e2e), "--space", args.space, "--ops", *args.ops,
           "--contexts", *args.contexts]
    per_process, started = [], time.time()
    for i in range(args.processes):
        out = subprocess.run(cmd + ["--seed", str(args.seed + i)], capture_output=True, text=True)
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"process_states.py: process {i} failed: {last}")
        per_process.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"process {i + 1}/{args.processes} done ({time.time() - started:.0f} s)", flush=True)
    rows = summarise(per_process)
    res = {"date": dt.date.today().isoformat(), "machine": fingerprint(), "backend": args.backend,
           "threads": args.threads, "processes": args.processes, "hidden": args.hidden,
           "protocol": "latency.stats.Protocol() op rules in shuffled rounds (measure_in_rounds), its allocator",
           "seconds": round(time.time() - started, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=1) + "\n")
    for r in rows:
        print(f"{r['entry']:32s} median {r['median_ms']:8.3f} ms  >10 %: {r['share_10pct_slower']:5.0%}  "
              f">25 %: {r['share_25pct_slower']:5.0%}  slowest {r['slowest_over_median']:.2f}x  "
              f"objects apart median {r['objects_gap_median_pct']:.1f} %")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
