"""From searched architecture weights to one architecture: AdaBERT's derivation, then a fit to the budget.

AdaBERT's rule: K = the most likely number of cells; each of the 3 nodes keeps its 2 strongest incoming edges,
strength being the edge's most likely *non-zero* op, which the edge then runs; the other edges become ``zero``.
Dropping edges makes the derived model faster than the search distribution's expected latency, and an argmax is
not an expectation, so :func:`fit_to_budget` then moves the architecture into the budget window with the fewest
log-probability lost per millisecond: while it is over budget, the change (one active edge's op, or K by one)
that saves a millisecond at the smallest cost in log-probability; while it is under the window's lower edge, the
change that buys one at the smallest cost. Both architectures are reported.

>>> import torch
>>> from nas.spaces import get_space
>>> space = get_space("adabert", "tiny")
>>> probs = {d.name: torch.full((len(d.choices),), 1.0 / len(d.choices)) for d in space.decisions()}
>>> arch = derive(space, probs)
>>> sum(v != "zero" for k, v in arch.choices.items() if k != "cells")
6
"""
from __future__ import annotations

import math

import torch

from nas.arch import Architecture
from nas.spaces.adabert import NODES, AdaBertSpace, edge_names


def derive(space: AdaBertSpace, probs: dict[str, torch.Tensor]) -> Architecture:
    """AdaBERT's derivation from per-decision probabilities (see the module docstring)."""
    ops = list(space.preset.ops)
    nonzero = [i for i, t in enumerate(ops) if t != "zero"]
    cells = space.decision("cells").choices
    choices: dict = {"cells": cells[int(probs["cells"].argmax())]}
    for j in range(NODES):
        incoming = [name for name, jj, _ in edge_names() if jj == j]
        best = {}
        for name in incoming:
            p = probs[name]
            i = max(nonzero, key=lambda i: float(p[i]))
            best[name] = (float(p[i]), ops[i])
        keep = sorted(incoming, key=lambda n: -best[n][0])[:2]
        for name in incoming:
            choices[name] = best[name][1] if name in keep else "zero"
    return Architecture(space.name, space.version, space.preset.name, choices)


def log_prob(space: AdaBertSpace, probs: dict[str, torch.Tensor], arch: Architecture) -> float:
    """Log-probability of the architecture's active choices (K and every non-zero edge) under ``probs``."""
    idx = space.indices(arch)
    return sum(math.log(max(float(probs[n][i]), 1e-12)) for n, i in idx.items()
               if n == "cells" or arch.choices[n] != "zero")


def fit_to_budget(space: AdaBertSpace, probs: dict[str, torch.Tensor], arch: Architecture, cost,
                  lo: float, hi: float) -> tuple[Architecture, list[dict]]:
    """Greedy moves into ``[lo, hi]`` of ``cost.value`` (see the module docstring). Returns (arch, moves made)."""
    ops = list(space.preset.ops)
    cells = list(space.decision("cells").choices)
    moves: list[dict] = []

    def value(a: Architecture) -> float:
        return cost.value(space.indices(a))

    def neighbours(a: Architecture):
        for name, _, _ in edge_names():
            if a.choices[name] == "zero":
                continue
            for t in ops:
                if t not in ("zero", a.choices[name]):
                    yield f"{name}={t}", Architecture(a.space, a.version, a.preset, {**a.choices, name: t})
        ki = cells.index(a.choices["cells"])
        for kj in (ki - 1, ki + 1):
            if 0 <= kj < len(cells):
                yield f"cells={cells[kj]}", Architecture(a.space, a.version, a.preset, {**a.choices, "cells": cells[kj]})

    cur, cur_v, cur_lp = arch, value(arch), log_prob(space, probs, arch)
    for _ in range(200):
        if cur_v > hi:
            want = -1
        elif cur_v < lo:
            want = 1
        else:
            break
        best = None
        for label, a in neighbours(cur):
            v = value(a)
            dv = v - cur_v
            if dv * want <= 0 or (want > 0 and v > hi):
                continue
            score = (log_prob(space, probs, a) - cur_lp) / abs(dv)  # log-probability per unit of cost
            if best is None or score > best[0]:
                best = (score, label, a, v)
        if best is None:
            break
        _, label, cur, new_v = best
        moves.append({"move": label, "from": cur_v, "to": new_v})
        cur_v, cur_lp = new_v, log_prob(space, probs, cur)
    return cur, moves


def op_distribution(space: AdaBertSpace, probs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean probability of each op kind over the 9 edges (``p_conv``, ``p_avgpool``, ...) and the expected K."""
    ops = list(space.preset.ops)
    kinds = sorted({t.split(":")[0] for t in ops})
    out = {f"p_{k}": 0.0 for k in kinds}
    names = [n for n, _, _ in edge_names()]
    for n in names:
        for i, t in enumerate(ops):
            out[f"p_{t.split(':')[0]}"] += float(probs[n][i]) / len(names)
    ks = torch.tensor(space.decision("cells").choices, dtype=torch.float64)
    out["expected_cells"] = float((probs["cells"].double() * ks).sum())
    return out


__all__ = ["derive", "fit_to_budget", "log_prob", "op_distribution"]
