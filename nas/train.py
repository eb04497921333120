"""Pieces every training loop of hwnas shares: resumable checkpoints, the learning-rate schedule, dev accuracy.

A loop saves its whole state (model, optimiser, schedule, RNG states, counters, history) with
:class:`Checkpoint` at the end of every epoch and every ``every_s`` seconds inside long epochs; the same command
after a kill loads it and goes on from the saved batch, with the same RNG states, so the result equals an
uninterrupted run with the same seed.

>>> import tempfile, torch
>>> ck = Checkpoint(tempfile.mkdtemp() + "/state.pt")
>>> ck.save({"step": 3, "w": torch.ones(2)}); ck.load()["step"]
3
"""
from __future__ import annotations

import io
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import HwnasError
from nas.io import atomic_write_bytes

log = logging.getLogger(__name__)


class TrainError(HwnasError, RuntimeError):
    """A run folder whose checkpoint cannot be used (corrupt, or written by another configuration)."""


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, numpy, torch) as tensors/lists that ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate((3, tuple(int(x) for x in s["python"]), s["python_pos"]))
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    torch.set_rng_state(s["torch"])


def seed_everything(seed: int) -> None:
    """One seed for Python, numpy and torch (threaded through every loop)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Checkpoint:
    """A resumable state file, written atomically (a kill never leaves half a file)."""

    def __init__(self, path: str | os.PathLike, every_s: float = 120.0) -> None:
        self.path = Path(path)
        self.every_s = every_s  # save inside an epoch at most this often
        self._last = time.monotonic()

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last = time.monotonic()

    def store(self, objects: dict[str, Any], **counters: Any) -> None:
        """Save each object's ``state_dict()`` under its name, the global RNG states and ``counters``."""
        self.save({**{k: o.state_dict() for k, o in objects.items()}, "rng": rng_state(), **counters})

    def restore(self, objects: dict[str, Any]) -> dict[str, Any] | None:
        """Load a saved state into ``objects`` (by name) and the RNGs; return the whole state, or None if none."""
        state = self.load()
        if state is None:
            return None
        for k, o in objects.items():
            o.load_state_dict(state[k])
        set_rng_state(state["rng"])
        return state

    def due(self) -> bool:
        """True when ``every_s`` seconds have passed since the last save."""
        return time.monotonic() - self._last >= self.every_s

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
            raise TrainError(f"{self.path}: cannot read the checkpoint ({type(e).__name__}); delete it to start "
                             "this step again") from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.06
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` of the steps, then linear decay to 0 (the BERT fine-tuning schedule)."""
    w = max(1, int(total_steps * warmup))

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return max(0.0, (total_steps - step) / max(1, total_steps - w))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


@torch.no_grad()
def predict_logits(model: nn.Module, batches, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over ``batches`` (dicts from :func:`nas.data.batches`), model in eval mode.

    ``forward(model, batch) -> logits`` defaults to ``model(input_ids, attention_mask, token_type_ids)``.
    Returns ``(logits (N, C), labels (N,))`` in the order of the batches' ``index``.
    """
    was = model.training
    model.eval()
    outs, labels, index = [], [], []
    for b in batches:
        logits = forward(model, b) if forward else model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        outs.append(logits.float())
        labels.append(b["labels"])
        index.append(b["index"])
    model.train(was)
    order = torch.cat(index).argsort()
    return torch.cat(outs)[order], torch.cat(labels)[order]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) if len(labels) else float("nan")


__all__ = ["Checkpoint", "TrainError", "rng_state", "set_rng_state", "seed_everything", "linear_schedule",
           "predict_logits", "accuracy"]
