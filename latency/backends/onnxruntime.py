"""onnxruntime backend: each graph is exported once to ONNX (dynamic batch and sequence length) and run by a
session with a fixed thread count and full graph optimisation; CPU execution provider, or CUDA with io-binding.

An op's own timing graph is optimised as it would be inside a whole model: the fusions listed in
:data:`OP_GRAPH_DISABLED` never fire in an exported model, so they are kept out of op graphs too. (onnxruntime fuses
a residual ``Add`` and ``LayerNormalization`` into ``SkipLayerNormalization`` only when both inputs have the same
symbolic shape. In an op graph both come from the input ``x``. In a whole model the position embedding leaves the
sequence axis unnamed, so the fusion never happens. Measured on the AMD EPYC at one thread, onnxruntime 1.31, b8 s128,
hidden 128: the fused kernel took 0.67 ms against 0.15 ms for ``Add`` + ``LayerNormalization``, which made NAS-BERT's
FFN and MHA entries 25-35 % dearer than the same layers inside a model.)

On CUDA the inputs live on the device (io-binding) and each timed run ends with the outputs synchronised, so
the wall time covers the whole kernel sequence and no host copies.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latency.backends.base import Backend, BackendError, Runnable, register_backend
from nas.export import export_arch, export_module, ort_session

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
OP_GRAPH_DISABLED = ("SkipLayerNormFusion",)  # fusions whole exported models never get (module docstring)


def _ort():
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a dependency
        raise BackendError("onnxruntime is not installed; `pip install onnxruntime` (or use --backend torch)") from None
    return onnxruntime


def dynamic_axes(module: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Axes 0 (batch) and 1 (seq_len) of every input of rank >= 2 and of the output, as far as its rank goes."""
    with torch.no_grad():
        out = module.eval()(*inputs.values())
    axes = {name: {0: "batch", 1: "seq_len"} for name, t in inputs.items() if t.dim() >= 2}
    axes["output"] = {0: "batch", 1: "seq_len"} if out.dim() >= 3 else {0: "batch"}
    return axes


class OrtRunnable(Runnable):
    def __init__(self, path: Path, disabled: tuple[str, ...] = ()) -> None:
        self.path = path
        self.disabled = disabled  # graph transformers left out of this graph's session
        self.session = None
        self.names: list[str] = []
        self.feed: dict[str, np.ndarray] = {}
        self.binding = None  # CUDA io-binding

    def release(self) -> None:
        self.session, self.binding = None, None


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    short = "ort"
    _ids = itertools.count()

    def __init__(self, threads: int = 1, device: str = "cpu") -> None:
        super().__init__(threads, device)
        ort = _ort()
        if device == "cuda" and CUDA_EP not in ort.get_available_providers():
            raise BackendError(
                f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider (a CPU build); "
                f"`pip uninstall -y onnxruntime && pip install onnxruntime-gpu=={ort.__version__}`, "
                "or use --backend torch"
            )
        self.providers = [CUDA_EP, CPU_EP] if device == "cuda" else [CPU_EP]

    @property
    def version(self) -> str:
        return _ort().__version__

    def info(self) -> dict:
        return {**super().info(), "provider": self.providers[0], "graph_optimization": "ORT_ENABLE_ALL",
                "execution_mode": "ORT_SEQUENTIAL", "inter_op_threads": 1,
                "op_graph_disabled_optimizers": list(OP_GRAPH_DISABLED)}

    def _path(self, stem: str) -> Path:
        return self.workdir / f"{stem}{next(self._ids)}.onnx"

    def prepare(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> OrtRunnable:
        path = export_module(module, inputs, self._path("op"), dynamic_axes=dynamic_axes(module, inputs))
        r = OrtRunnable(path, OP_GRAPH_DISABLED)
        self.bind(r, inputs)
        return r

    def prepare_arch(self, arch, inputs, num_labels: int = 2, seed: int = 0) -> OrtRunnable:
        r = OrtRunnable(export_arch(arch, self._path("arch"), num_labels=num_labels, pair=False, seed=seed))
        self.bind(r, inputs)
        return r

    def bind(self, runnable: OrtRunnable, inputs: dict[str, torch.Tensor]) -> None:
        if runnable.session is None:
            runnable.session = ort_session(runnable.path, threads=self.threads, providers=self.providers,
                                           disabled_optimizers=runnable.disabled)
            runnable.names = [i.name for i in runnable.session.get_inputs()]
        missing = [n for n in runnable.names if n not in inputs]
        if missing:
            raise BackendError(f"graph {runnable.path.name} needs inputs {missing}; got {list(inputs)}")
        runnable.feed = {n: inputs[n].detach().cpu().numpy() for n in runnable.names}
        if self.device == "cuda":
            ort = _ort()
            b = runnable.session.io_binding()
            for n, arr in runnable.feed.items():
                b.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
            for o in runnable.session.get_outputs():
                b.bind_output(o.name, "cuda", 0)
            runnable.binding = b

    def time(self, runnable: OrtRunnable, n: int) -> list[float]:
        if runnable.session is None:
            raise BackendError("time() before bind(): bind the runnable to inputs first")
        sess, feed, out = runnable.session, runnable.feed, []
        clock = time.perf_counter
        if runnable.binding is not None:
            b = runnable.binding
            for _ in range(n):
                t0 = clock()
                sess.run_with_iobinding(b)
                b.synchronize_outputs()
                out.append(clock() - t0)
            return out
        for _ in range(n):
            t0 = clock()
            sess.run(None, feed)
            out.append(clock() - t0)
        return out
