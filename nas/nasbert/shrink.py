"""Latency bins of a block's paths, the paths sampled into them, and the halving of progressive shrinking.

A block's latency is the sum of the predictor's cost terms that depend only on the block's own decisions (its
layers, the adapters inside it, the embedding in the first block, the head in the last); the adapters between
blocks are added when blocks are combined (:mod:`nas.nasbert.select`), and so is the predictor's cold-weights term,
a function of the whole model's weights (``CostModel.cold``). The block's exact fastest and slowest paths
bound ``B`` equal-width bins. Bins are filled from many random paths drawn with a random tilt towards cheap or
expensive ops (plain uniform draws almost never reach the extreme bins), plus the two extreme paths; each bin then
keeps ``E`` of its paths, uniformly.
"""
from __future__ import annotations

import itertools
import random

import numpy as np


class BlockCost:
    """Predicted milliseconds of a block's paths (rows of choice indices over ``decisions``)."""

    def __init__(self, cost, decisions: tuple[str, ...]) -> None:
        pos = {d: i for i, d in enumerate(decisions)}
        self.decisions = decisions
        self.terms = [([pos[n] for n in names], c.detach().double().numpy()) for names, c in cost.terms
                      if all(n in pos for n in names)]
        self.sizes = {pos[n]: c.shape[k] for names, c in cost.terms for k, n in enumerate(names) if n in pos}

    def __call__(self, paths: np.ndarray) -> np.ndarray:
        paths = np.asarray(paths, dtype=np.int64).reshape(-1, len(self.decisions))  # (P, D)
        total = np.zeros(len(paths))
        for cols, table in self.terms:
            total += table[tuple(paths[:, c] for c in cols)]
        return total

    def extremes(self, n_groups: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The exact (fastest, slowest) paths: widths enumerated, then each op chosen on its own."""
        best: list = [None, None]
        for widths in itertools.product(*(range(self.sizes.get(i, 1)) for i in range(n_groups))):
            for k, pick in enumerate((np.argmin, np.argmax)):
                path = list(widths)
                for i in range(n_groups, len(self.decisions)):
                    opts = np.array([[*widths, *([0] * (i - n_groups)), o, *([0] * (len(self.decisions) - i - 1))]
                                     for o in range(self.sizes[i])])
                    path.append(int(pick(self._layer_only(opts, i))))
                v = float(self(np.array([path]))[0])
                if best[k] is None or (v < best[k][0] if k == 0 else v > best[k][0]):
                    best[k] = (v, tuple(path))
        return best[0][1], best[1][1]

    def _layer_only(self, paths: np.ndarray, col: int) -> np.ndarray:
        total = np.zeros(len(paths))
        for cols, table in self.terms:
            if col in cols:
                total += table[tuple(paths[:, c] for c in cols)]
        return total

    def op_costs(self, col: int, widths: np.ndarray, n_groups: int, lpg: int) -> np.ndarray:
        """``(P, n_ops)``: the cost of each op of layer column ``col`` at each row's width."""
        g = (col - n_groups) // lpg
        for cols, table in self.terms:
            if cols == [g, col]:
                return table[widths[:, g]]
        return np.zeros((len(widths), self.sizes[col]))


def fill_bins(cost: BlockCost, n_groups: int, lpg: int, bins: int, per_bin: int, seed: int,
              draws: int = 20000) -> tuple[list[list[tuple[int, ...]]], np.ndarray]:
    """Sample paths into ``bins`` equal-width latency bins, up to ``per_bin`` each. The block's fastest and slowest
    paths (:meth:`BlockCost.extremes`) are always among them (first and last bin, beside the cap), so that every
    budget down to the space's fastest architecture stays reachable (:func:`halve` keeps them too).

    Returns ``(paths per bin, bin edges in ms)``.
    """
    rng = np.random.default_rng(seed)
    d = len(cost.decisions)
    widths = np.stack([rng.integers(0, cost.sizes.get(i, 1), draws) for i in range(n_groups)], 1)  # (P, G)
    tilt = rng.uniform(-6.0, 6.0, draws)[:, None]  # (P, 1): > 0 favours cheap ops, < 0 expensive ones
    cols = [widths]
    for col in range(n_groups, d):
        c = cost.op_costs(col, widths, n_groups, lpg)  # (P, K)
        z = (c - c.min(1, keepdims=True)) / np.maximum(np.ptp(c, 1, keepdims=True), 1e-12)
        logits = -tilt * z
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        u = rng.random((draws, 1))
        cols.append(np.minimum((p.cumsum(1) < u).sum(1), c.shape[1] - 1)[:, None])
    paths = np.concatenate(cols, 1)  # (P, D)
    lo_path, hi_path = cost.extremes(n_groups)
    paths = np.unique(np.concatenate([paths, np.array([lo_path, hi_path])]), axis=0)
    ms = cost(paths)
    lo, hi = float(cost(np.array([lo_path]))[0]), float(cost(np.array([hi_path]))[0])
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, ms, side="right") - 1, 0, bins - 1)
    pick = random.Random(seed)
    out = []
    ends = {0: tuple(int(v) for v in lo_path), bins - 1: tuple(int(v) for v in hi_path)}
    for b in range(bins):
        members = [tuple(int(v) for v in row) for row in paths[which == b]]
        pick.shuffle(members)
        kept = members[:per_bin]
        if b in ends and ends[b] not in kept:  # beside the cap: the sampled members stay what they were
            kept.append(ends[b])
        out.append(sorted(kept))
    return out, edges


def halve(pool: list[list[tuple[int, ...]]], scores: dict[tuple[int, ...], float], keep: int,
          protect: tuple[tuple[int, ...], ...] = ()) -> list[list[tuple[int, ...]]]:
    """Per bin, the better half (lower score) of its paths, never fewer than ``keep`` (ties: path order); the
    paths in ``protect`` (the block's fastest and slowest) stay whatever their score."""
    out = []
    for members in pool:
        ranked = sorted(members, key=lambda p: (scores[p], p))
        kept = ranked[: max(min(keep, len(ranked)), len(ranked) // 2)]
        out.append(sorted(kept + [p for p in ranked if p in protect and p not in kept]))
    return out


__all__ = ["BlockCost", "fill_bins", "halve"]
