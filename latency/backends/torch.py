"""torch (eager) backend: the module in eval mode under ``torch.inference_mode`` with a fixed intra-op thread
count; on CUDA each run is bracketed by CUDA events and followed by a synchronize.

The thread count is set for the duration of :meth:`TorchBackend.time` only and restored afterwards, so timing
leaves the process as it found it.
"""
from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from latency.backends.base import Backend, Runnable, register_backend


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
        return {**super().info(), "provider": "cuda" if self.device == "cuda" else "cpu",
                "graph_optimization": "eager", "inference_mode": True}

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
