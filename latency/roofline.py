"""Roofline: this device's peak matmul FLOP/s and memory bandwidth, and each op's time against its bound.

Both ceilings are measured once per profile with the profile's own backend and threads (small microbenchmarks,
a few seconds): the best p10 throughput of a few ``Linear`` shapes and of element-wise scale and add over
arrays from cache-sized to DRAM-sized. An op's bound is ``max(flops / peak, bytes / bandwidth)``; its roofline
efficiency is ``bound / measured`` in percent. A measurement faster than its bound (beyond a tolerance) cannot
be right: a sign of a broken timer or of a wrong FLOP/byte count, and it is flagged.

>>> rows = roofline_rows([{"op_key": "x", "batch": 1, "seq_len": 8, "flops": 2e9, "bytes": 0,
...                        "latency_p50_ms": 1.0}], {"peak_gflops": 100.0, "bandwidth_gbs": 10.0})
>>> rows[0]["bound_ms"], rows[0]["faster_than_bound"]
(20.0, True)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from latency.backends.base import Backend
from latency.measure import measure_runnable
from latency.stats import Protocol

MATMUL_SHAPES = ((4096, 256, 1024), (2048, 1024, 1024), (1024, 512, 512), (8192, 128, 512))  # (M, K, N)
BANDWIDTH_ELEMENTS = (2**14, 2**15, 2**16, 2**17, 2**18, 2**20, 2**22, 2**25)  # float32: 64 KiB .. 128 MiB per array
# a GPU needs larger problems to reach its ceilings: a matmul that fills 132 multiprocessors, arrays far beyond a
# 60 MB L2 (float32: 512 MiB per array)
CUDA_MATMUL_SHAPES = ((8192, 8192, 8192), (16384, 4096, 4096), (8192, 1024, 4096))
CUDA_BANDWIDTH_ELEMENTS = (2**24, 2**27)
TOLERANCE = 0.20  # flag a measurement faster than 80 % of its bound (the ceilings themselves vary by ~10 %)
ROOFLINE_COLUMNS = ["op_key", "batch", "seq_len", "latency_p50_ms", "bound_ms", "bound_by", "pct_of_bound",
                    "faster_than_bound"]


class Scale(nn.Module):
    """``2 * x``: reads and writes each element once (a bandwidth probe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


class Add(nn.Module):
    """``x + y``: two reads and a write per element (a bandwidth probe)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def _p10_s(backend: Backend, module: nn.Module, inputs: dict, protocol: Protocol) -> float:
    runnable = backend.prepare(module, inputs)
    samples, _ = measure_runnable(backend, runnable, protocol)
    runnable.release()
    return float(np.percentile(samples, 10))


def measure_roofline(backend: Backend, protocol: Protocol | None = None) -> dict:
    """Peak matmul GFLOP/s and memory bandwidth (GB/s) through ``backend`` at its thread count.

    Returns:
        ``{peak_gflops, bandwidth_gbs, dram_bandwidth_gbs, matmul: [...], bandwidth: [...], method}``.
    """
    protocol = protocol or Protocol(min_runs=5, time_cap_s=0.3, target_rse=0.005)
    cuda = backend.device == "cuda"
    gen = torch.Generator().manual_seed(0)
    matmul = []
    for m, k, n in MATMUL_SHAPES + (CUDA_MATMUL_SHAPES if cuda else ()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            lin = nn.Linear(k, n, bias=False)
        t = _p10_s(backend, lin, {"x": torch.randn(1, m, k, generator=gen)}, protocol)  # (1, M, K)
        matmul.append({"m": m, "k": k, "n": n, "gflops": round(2 * m * k * n / t / 1e9, 3)})
    bandwidth = []
    for e in sorted(BANDWIDTH_ELEMENTS + (CUDA_BANDWIDTH_ELEMENTS if cuda else ())):
        row = {"elements": e}
        for name, module, arrays in (("scale", Scale(), 1), ("add", Add(), 2)):
            x = {f"x{i}": torch.randn(1, e // 256, 256, generator=gen) for i in range(arrays)}  # (1, E/256, 256)
            t = _p10_s(backend, module, x, protocol)
            row[f"{name}_gbs"] = round((arrays + 1) * 4 * e / t / 1e9, 3)  # reads + one write, float32
        row["gbs"] = max(row["scale_gbs"], row["add_gbs"])
        bandwidth.append(row)
    return {
        "peak_gflops": max(r["gflops"] for r in matmul),
        "bandwidth_gbs": max(r["gbs"] for r in bandwidth),  # cache level: the most generous ceiling
        "dram_bandwidth_gbs": bandwidth[-1]["gbs"],
        "matmul": matmul,
        "bandwidth": bandwidth,
        "method": "p10 time of fp32 Linear (M,K,N), x*2 and x+y microbenchmarks through the profile's backend "
                  "and threads; bound = max(flops/peak, bytes/bandwidth)" + (
                      "; on CUDA also larger shapes, CUDA-event timed, TF32 " +
                      ("on" if torch.backends.cuda.matmul.allow_tf32 else "off (plain fp32)") if cuda else ""),
        "tolerance": TOLERANCE,
    }


def roofline_rows(ops_rows: list[dict], roofline: dict, tolerance: float = TOLERANCE) -> list[dict]:
    """Each op entry's roofline bound (ms), what bounds it, its % of the bound and the faster-than-bound flag.

    ``pct_of_bound`` is ``bound / measured * 100`` (100 % = at the roofline); None for free ops (no FLOPs, no
    bytes, e.g. identity).
    """
    peak = float(roofline["peak_gflops"]) * 1e9
    bw = float(roofline["bandwidth_gbs"]) * 1e9
    out = []
    for r in ops_rows:
        t_compute, t_memory = float(r["flops"]) / peak, float(r["bytes"]) / bw
        bound_ms = max(t_compute, t_memory) * 1e3
        measured = float(r["latency_p50_ms"])
        pct = round(bound_ms / measured * 100, 2) if bound_ms > 0 and measured > 0 else None
        out.append({
            "op_key": r["op_key"], "batch": r["batch"], "seq_len": r["seq_len"], "latency_p50_ms": measured,
            "bound_ms": round(bound_ms, 6), "bound_by": "compute" if t_compute >= t_memory else "memory",
            "pct_of_bound": pct, "faster_than_bound": bool(bound_ms > 0 and measured < bound_ms * (1 - tolerance)),
        })
    return out


def roofline_summary(rows: list[dict]) -> dict:
    """Median and p90 % of bound, and the entries flagged faster than their bound."""
    pct = np.array([r["pct_of_bound"] for r in rows if r["pct_of_bound"] is not None], dtype=float)
    flagged = [f"{r['op_key']} b{r['batch']}_s{r['seq_len']}" for r in rows if r["faster_than_bound"]]
    return {
        "median_pct_of_bound": round(float(np.median(pct)), 2) if pct.size else None,
        "p90_pct_of_bound": round(float(np.percentile(pct, 90)), 2) if pct.size else None,
        "n_faster_than_bound": len(flagged),
        "faster_than_bound": flagged[:50],
    }


def write_roofline_csv(path, rows: list[dict]) -> None:
    """``roofline.csv`` in the profile folder: :func:`roofline_rows` of every op entry (atomic write)."""
    import csv
    import io

    from nas.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, ROOFLINE_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
