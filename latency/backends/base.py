"""The backend interface: a way of running a torch module's computation and timing it.

A backend *measures* and nothing else: :meth:`Backend.time` returns raw seconds per run; statistics live in
:mod:`latency.stats`. The life of a timed graph::

    runnable = backend.prepare(module, inputs)   # export / compile once (dynamic batch and sequence length)
    backend.bind(runnable, inputs_of_a_context)  # cheap: new input tensors for another Context
    seconds = backend.time(runnable, n=10)       # n timed runs
    runnable.release()                           # drop the session (it is re-created on the next bind)

>>> sorted(BACKEND_REGISTRY)
['onnxruntime', 'torch']
"""
from __future__ import annotations

import abc
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from nas.errors import HwnasError
from nas.registry import add_entry


class BackendError(HwnasError, RuntimeError):
    """A backend that cannot run here (unknown name, missing library, no CUDA device)."""


TORCH_CUDA_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cu128"


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here, as one line with the fix (None: torch sees a CUDA device).

    >>> import torch
    >>> cuda_problem() is None or "--device cuda" in cuda_problem()
    True
    """
    if torch.cuda.is_available():
        return None
    if not torch.version.cuda:
        return (f"--device cuda: this torch ({torch.__version__}) is a CPU-only build; install a CUDA build first "
                f"(`{TORCH_CUDA_INSTALL}`, then `pip install -e .`), or use --device cpu")
    return (f"--device cuda: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU here: no "
            "NVIDIA driver, or CUDA_VISIBLE_DEVICES hides it (`nvidia-smi` should list the GPU); or use --device cpu")


class Runnable:
    """A prepared graph plus the inputs it is bound to. Backends subclass it with their own state."""

    def release(self) -> None:
        """Free heavy state (sessions, device memory); :meth:`Backend.bind` restores it."""


class Backend(abc.ABC):
    """Runs prepared graphs and times them. Subclasses register with :func:`register_backend`."""

    name: ClassVar[str] = ""  # registry name, e.g. "onnxruntime"
    short: ClassVar[str] = ""  # short name used in profile folder names, e.g. "ort"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    def __init__(self, threads: int = 1, device: str = "cpu") -> None:
        if threads < 1:
            raise BackendError(f"--threads must be at least 1, got {threads}")
        if device not in self.devices:
            raise BackendError(f"backend {self.name!r} runs on {', '.join(self.devices)}, not {device!r}")
        if device == "cuda":
            problem = cuda_problem()
            if problem:
                raise BackendError(problem)
        self.threads, self.device = threads, device
        self._workdir: Path | None = None
        self.settled: dict | None = None  # what :meth:`settle` did (None: not yet)

    # -- description --------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def version(self) -> str:
        """The library version that runs the graphs."""

    def info(self) -> dict:
        """``{name, version, device, provider, threads, graph_optimization, dtype}`` for profile.json."""
        return {"name": self.name, "version": self.version, "device": self.device, "provider": self.device,
                "threads": self.threads, "graph_optimization": "none", "dtype": "float32"}

    # -- running ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, module: nn.Module, inputs: dict[str, torch.Tensor]) -> Runnable:
        """Make ``module(*inputs.values())`` runnable (export/compile once) and bind it to ``inputs``."""

    def prepare_arch(self, arch: Any, inputs: dict[str, torch.Tensor], num_labels: int = 2, seed: int = 0) -> Runnable:
        """A whole architecture as a user runs it (random weights, seeded); bound to ``inputs``."""
        torch.manual_seed(seed)
        model = arch.get_space().build(arch, num_labels=num_labels, pair=False)
        return self.prepare(model, inputs)

    @abc.abstractmethod
    def bind(self, runnable: Runnable, inputs: dict[str, torch.Tensor]) -> None:
        """Bind new inputs (same names and dtypes, any batch and sequence length)."""

    @abc.abstractmethod
    def time(self, runnable: Runnable, n: int) -> list[float]:
        """Run ``n`` times; the wall (or CUDA event) time of each run in seconds."""

    def settle(self) -> dict:
        """Bring the device to its working state before anything is timed (a GPU's clocks ramp up under load),
        once per backend; returns what was done (also kept in :attr:`settled`). CPUs need nothing here: each
        visit's own warm-up covers them."""
        if self.settled is None:
            self.settled = {"device": self.device, "method": "none (CPU: each visit warms up)"}
        return self.settled

    # -- scratch space ------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """Where exported graphs go (a fresh temporary folder unless :meth:`use_workdir` named one); removed
        by :meth:`close`."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"hwnas-{self.name}-"))
        return self._workdir

    def use_workdir(self, path: Path) -> None:
        """Export into ``path`` (emptied first), e.g. inside a profile folder, so that a killed run leaves its
        files where the next run of the same folder clears them."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self._workdir = path

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BACKEND_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: add a backend under ``cls.name``."""
    add_entry(BACKEND_REGISTRY, cls.name, cls, BackendError, "backend")
    return cls


def get_backend(name: str, threads: int = 1, device: str = "cpu") -> Backend:
    """Instantiate a registered backend.

    >>> get_backend("torch", threads=1).info()["name"]
    'torch'
    """
    import latency.backends  # noqa: F401  (registers the built-in backends)

    aliases = {"ort": "onnxruntime", "pytorch": "torch"}
    try:
        cls = BACKEND_REGISTRY[aliases.get(name, name)]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKEND_REGISTRY))}") from None
    return cls(threads=threads, device=device)
