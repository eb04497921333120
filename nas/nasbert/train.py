"""Block-wise distillation of one block's supernet with single-path sampling and progressive shrinking.

The block is trained alone (its input is the teacher's state, not another student block's output), so blocks can
run in separate processes. Phases, each resumable from ``RUN/blocks/block{b}.pt`` (saved at every phase change and
every two minutes inside training):

1. ``warmup``: ``warmup_steps`` steps, each on one uniformly sampled path (a width per group, an op per layer).
2. ``score`` / ``train`` rounds: the bins are filled (:func:`nas.nasbert.shrink.fill_bins`); every round scores
   each bin's paths on ``score_batches`` held-out batches, keeps the better half (never fewer than ``keep_per_bin``),
   then trains ``round_steps`` steps on the survivors only (a bin, then one of its paths, uniformly). The block's
   fastest and slowest paths are kept as candidates whatever their score, so that tight budgets stay reachable,
   but not trained on (their ops' weights are shared with the paths that are).
3. ``final``: the survivors are scored once more; these are the block losses selection combines.

Each step's path and batch depend only on (seed, block, step), so a resumed run equals an uninterrupted one, and
processes of one block (data parallel) agree on the path without talking. Within a block, the global batch is split
across the block's processes and their gradients averaged (:func:`nas.dist.average_gradients`).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.configs import NasBertConfig
from nas.dist import average_gradients, shard, sum_tensor
from nas.nasbert.shrink import BlockCost, fill_bins, halve
from nas.nasbert.supernet import BlockNet
from nas.nasbert.targets import Targets, fit_loss, rel_error
from nas.train import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class Shard:
    """Where this process sits in its block's group."""

    rank: int = 0  # rank within the block's group
    size: int = 1  # processes training this block
    group: object = None  # torch.distributed process group (None: alone)


class BlockTrainer:
    """Trains and shrinks one block's supernet (see the module docstring)."""

    def __init__(self, net: BlockNet, targets: Targets, train_rows: int, heldout_rows: torch.Tensor,
                 ids: torch.Tensor, cost: BlockCost, cfg: NasBertConfig, folder: Path, part: Shard | None = None,
                 progress: bool = False) -> None:
        self.net, self.t, self.ids, self.cost, self.cfg = net, targets, ids, cost, cfg
        self.b = net.layout.index
        self.n_train, self.heldout = train_rows, heldout_rows
        self.part = part or Shard()
        self.progress = progress
        self.ckpt = Checkpoint(folder / f"block{self.b}.pt")
        params = [p for p in net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        total = cfg.steps_per_block()
        warm = max(1, total // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm))
        self.energy = float(targets.energy[self.b])
        self._perm: dict[int, torch.Tensor] = {}
        self.ends = tuple(cost.extremes(len(net.layout.groups)))  # the block's fastest and slowest paths

    # -- data ------------------------------------------------------------------------------------------
    def train_rows(self, step: int) -> torch.Tensor:
        """The global batch of training rows of ``step`` (a seeded permutation per pass over the corpus)."""
        bs = self.cfg.batch_size
        usable = (self.n_train // bs) * bs
        epoch, offset = divmod(step * bs, usable)
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.b * 100 + epoch)
            self._perm = {epoch: torch.randperm(self.n_train, generator=g)}
        return self._perm[epoch][offset:offset + bs]

    def inputs(self, rows: torch.Tensor, width: int):
        x, target, resid = self.t.block_io(self.b, rows, width)
        if x is None:
            x = self.ids[rows]  # (B, T) token ids
        return x, torch.ones(len(rows), self.ids.shape[1]), target, resid

    # -- steps -----------------------------------------------------------------------------------------
    def step(self, step: int, path: tuple[int, ...]) -> float:
        rows = self.train_rows(step)
        mine = shard(rows, self.part.rank, self.part.size)
        x, mask, target, _ = self.inputs(mine, self.net.widths(path)[0])
        self.net.train()
        y = self.net(x, mask, path)  # (b, T, H_last)
        loss = fit_loss(y, target, self.energy) * (len(mine) * self.part.size / len(rows))
        self.opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # a path of parameter-free ops only (the block's fastest, e.g.) has nothing to train
            loss.backward()
            used = self.net.path_parameters(path)
            average_gradients(used, self.part.group, self.part.size)
            nn.utils.clip_grad_norm_(used, 1.0)
            self.opt.step()
        self.sched.step()
        return loss.item()

    @torch.no_grad()
    def score(self, paths: list[tuple[int, ...]], round_: int) -> dict[tuple[int, ...], float]:
        """Mean relative error of each path on ``score_batches`` held-out batches (paths split over the group)."""
        cfg = self.cfg
        nb = max(1, len(self.heldout) // cfg.batch_size)
        batches = [self.heldout[((round_ * cfg.score_batches + j) % nb) * cfg.batch_size:][: cfg.batch_size]
                   for j in range(cfg.score_batches)]
        return self._scores(paths, batches)

    @torch.no_grad()
    def _scores(self, paths, batches) -> dict[tuple[int, ...], float]:
        self.net.eval()
        out = torch.zeros(len(paths), dtype=torch.float64)
        for i, path in enumerate(paths):
            if i % self.part.size != self.part.rank:
                continue
            total = 0.0
            for rows in batches:
                x, mask, target, resid = self.inputs(rows, self.net.widths(path)[0])
                total += float(rel_error(self.net(x, mask, path), target, resid, self.energy))
            out[i] = total / len(batches)
        sum_tensor(out, self.part.group)
        return {p: float(v) for p, v in zip(paths, out)}

    def path_at(self, step: int, pool: list[list[tuple[int, ...]]] | None) -> tuple[int, ...]:
        rng = random.Random(f"{self.cfg.seed}:{self.b}:{step}")
        if pool is None:
            return self.net.sample(rng)
        trainable = [[p for p in m if p not in self.ends] for m in pool]  # the extremes are kept, not trained
        members = rng.choice([m for m in trainable if m] or [m for m in pool if m])
        return rng.choice(members)

    # -- the whole block -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train and shrink the block (resuming a saved state); returns its record (survivors, losses, timings)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        st = {"phase": "warmup", "step": 0, "round": 0, "pool": None, "rounds": [], "history": [], "spent": 0.0,
              "edges": None, "final": None}
        saved = self.ckpt.restore({"net": self.net, "opt": self.opt, "sched": self.sched})
        if saved is not None:
            st.update({k: saved[k] for k in st})
        start = time.perf_counter()
        total = cfg.steps_per_block()
        bar = tqdm(total=total, initial=st["step"], desc=f"block {self.b}", unit="step", disable=not self.progress)
        losses: list[float] = []

        def save():
            self.ckpt.store({"net": self.net, "opt": self.opt, "sched": self.sched},
                            **{**st, "spent": st["spent"] + time.perf_counter() - start})

        def train_to(end: int, pool) -> None:
            while st["step"] < end:
                losses.append(self.step(st["step"], self.path_at(st["step"], pool)))
                st["step"] += 1
                bar.update(1)
                if st["step"] % 50 == 0 or st["step"] == end:
                    st["history"].append({"step": st["step"], "phase": st["phase"], "round": st["round"],
                                          "loss": float(np.mean(losses))})
                    losses.clear()
                if self.part.rank == 0 and self.ckpt.due():
                    save()

        while st["phase"] != "done":
            if st["phase"] == "warmup":
                train_to(cfg.warmup_steps, None)
                pool, edges = fill_bins(self.cost, len(self.net.layout.groups), self.net.lpg, cfg.bins,
                                        cfg.paths_per_bin, seed=cfg.seed * 1000 + self.b)
                st.update(phase="score", round=0, pool=pool, edges=edges.tolist())
            elif st["phase"] == "score":
                flat = [p for m in st["pool"] for p in m]
                scores = self.score(flat, st["round"])
                kept = halve(st["pool"], scores, cfg.keep_per_bin, self.ends)
                st["rounds"].append({"round": st["round"], "scored": len(flat),
                                     "kept": sum(len(m) for m in kept),
                                     "survivors": [[{"path": list(p), "loss": scores[p]} for p in m] for m in kept]})
                st.update(phase="train", pool=kept)
            elif st["phase"] == "train":
                train_to(cfg.warmup_steps + (st["round"] + 1) * cfg.round_steps, st["pool"])
                st["round"] += 1
                st["phase"] = "score" if st["round"] < cfg.rounds() else "final"
            elif st["phase"] == "final":
                flat = [p for m in st["pool"] for p in m]
                scores = self.score(flat, st["round"])
                ms = self.cost(np.array(flat)) if flat else np.zeros(0)
                st["final"] = [{"path": list(p), "bin": b, "loss": scores[p], "latency_ms": float(ms[flat.index(p)])}
                               for b, m in enumerate(st["pool"]) for p in m]
                st["phase"] = "done"
            if self.part.rank == 0:
                save()
        bar.close()
        return {"block": self.b, "decisions": list(self.net.layout.decisions), "teacher_in": self.net.layout.teacher_in,
                "teacher_out": self.net.layout.teacher_out, "steps": st["step"], "bin_edges_ms": st["edges"],
                "rounds": st["rounds"], "survivors": st["final"],
                "history": st["history"], "minutes": (st["spent"] + time.perf_counter() - start) / 60}


__all__ = ["BlockTrainer", "Shard"]
