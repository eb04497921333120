"""torch (eager) backend: the module in eval mode under ``torch.inference_mode`` with a fixed intra-op thread
count; on CUDA each run is bracketed by CUDA events and followed by a synchronize.

On CUDA the time is the GPU's own clock: a synchronize, an event recorded on the stream, the module's kernels
launched (eagerly, as a user runs them: launch gaps count), an event, a synchronize; the elapsed time between the
two events. Inputs are copied to the device when bound, never inside a timed run. Before anything is timed,
:meth:`TorchBackend.settle` keeps the GPU busy until its clocks have ramped up (an idle GPU idles its clocks).

The thread count is set for the duration of :meth:`TorchBackend.time` only and restored afterwards, so timing
leaves the process as it found it.
"""
from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from latency.backends.base import Backend, Runnable, register_backend

SETTLE_MIN_S, SETTLE_MAX_S, SETTLE_N = 2.0, 15.0, 4096  # GPU clock warm-up: at least / at most, probe matmul size


@contextlib.contextmanager
def fixed_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchRunnable(Runnable):
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.args: tuple[torch.Tensor, ...] = ()

    def release(self) -> None:
        self.args = ()


@register_backend
class TorchBackend(Backend):
    name = "torch"
    short = "torch"

    @property
    def version(self) -> str:
        return torch.__version__

    def info(self) -> dict:
        info = {**super().info(), "provider": "cuda" if self.device == "cuda" else "cpu",
                "graph_optimization": "eager", "inference_mode": True}
        if self.device == "cuda":
            info.update(timer="CUDA events around each run, synchronize before and after (GPU clock)",
                        inputs="on the device before timing; host-device copies not timed",
                        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                        cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
        return info

    def settle(self, min_s: float = SETTLE_MIN_S, max_s: float = SETTLE_MAX_S) -> dict:
        """On CUDA: run a fixed matmul probe in chunks of about 0.2 s until at least ``min_s`` have passed and two
        chunks in a row agree within 1 % (clocks ramped up and steady), or ``max_s``; returns the probe's first and
        last chunk medians (ms), seconds spent and chunks. Once per backend."""
        if self.device != "cuda":
            return super().settle()
        if self.settled is not None:
            return self.settled
        from latency.device import gpu_clocks

        before = gpu_clocks()
        n = SETTLE_N
        a = torch.randn(n, n, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        b = torch.randn(n, n, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        start = time.perf_counter()
        medians: list[float] = []
        reps = 1
        with torch.inference_mode():
            while True:
                chunk = []
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < 0.2 or len(chunk) < 3:
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    for _ in range(reps):
                        a @ b
                    e1.record()
                    e1.synchronize()
                    chunk.append(e0.elapsed_time(e1) / reps)
                    if len(chunk) == 1 and chunk[0] * reps < 5:  # make a probe call last at least ~5 ms
                        reps = max(reps, int(5 / max(chunk[0], 1e-3)) + 1)
                medians.append(sorted(chunk)[len(chunk) // 2])
                spent = time.perf_counter() - start
                steady = len(medians) >= 2 and abs(medians[-1] - medians[-2]) <= 0.01 * medians[-2]
                if (spent >= min_s and steady) or spent >= max_s:
                    break
        del a, b
        torch.cuda.synchronize()
        self.settled = {"device": "cuda", "method": f"fp32 {n}x{n}x{n} matmul in 0.2 s chunks until two chunk "
                        f"medians agree within 1 % after at least {min_s:g} s (at most {max_s:g} s)",
                        "seconds": round(time.perf_counter() - start, 2), "chunks": len(medians),
                        "probe_ms_first": round(medians[0], 4), "probe_ms_last": round(medians[-1], 4),
                        "steady": bool(steady), "clocks_before": before, "clocks_after": gpu_clocks()}
        return self.settled

    def prepare(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> TorchRunnable:
        r = TorchRunnable(module.eval().to(self.device))
        self.bind(r, inputs)
        return r

    def bind(self, runnable: TorchRunnable, inputs: dict[str, torch.Tensor]) -> None:
        runnable.args = tuple(t.to(self.device) for t in inputs.values())

    def time(self, runnable: TorchRunnable, n: int) -> list[float]:
        module, args, out = runnable.module, runnable.args, []
        with fixed_threads(self.threads), torch.inference_mode():
            if self.device == "cuda":
                for _ in range(n):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    torch.cuda.synchronize()
                    start.record()
                    module(*args)
                    end.record()
                    torch.cuda.synchronize()
                    out.append(start.elapsed_time(end) / 1e3)  # ms -> s
                return out
            clock = time.perf_counter
            for _ in range(n):
                t0 = clock()
                module(*args)
                out.append(clock() - t0)
        return out
