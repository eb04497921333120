"""Selection: combine the blocks' survivors into architectures and pick one per latency budget.

Every combination of one survivor per block is an architecture. Its predicted latency is the predictor's exactly
(block terms + the adapters between blocks + the fixed parts); its quality estimate is the mean of its blocks'
losses (relative errors, :func:`nas.nasbert.targets.rel_error`). Per budget the ``T`` best estimates with predicted
latency within the budget are re-scored end to end (the whole student on held-out text, its last block against the
teacher's last state), and the best of them is chosen. A budget below every combination is reported with the
fastest one, and the others go on.

The combined table is enumerated in chunks (one first-block survivor at a time), so the paper's 100^4 rows fit in
memory: all rows are kept up to ``keep_all`` rows, beyond that the Pareto front and each budget's top ``T``.
"""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Choice:
    """The outcome for one budget."""

    budget_ms: float
    feasible: bool
    row: int | None  # index into the candidates table (None when no combination meets the budget)
    fastest_ms: float  # the fastest combination's predicted latency
    rescored: list[int]  # rows re-scored end to end


def pareto(latency: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Boolean mask of rows no other row beats on both (lower latency and lower loss)."""
    order = np.lexsort((quality, latency))
    mask = np.zeros(len(latency), dtype=bool)
    best = np.inf
    for i in order:
        if quality[i] < best:
            mask[i], best = True, quality[i]
    return mask


def _np_terms(terms, col: dict[str, int]) -> list[tuple[list[int], np.ndarray]]:
    """A cost model's terms as (decision columns, numpy table)."""
    return [([col[n] for n in ns], c.detach().double().numpy()) for ns, c in terms]


def _sum_terms(terms, full: np.ndarray, base: float) -> np.ndarray:
    """``base`` plus each term's entry at each row of choice indices ``full`` ``(n, decisions)``."""
    out = np.full(len(full), float(base))
    for cols, table in terms:
        out += table[tuple(full[:, c] for c in cols)]
    return out


def combine(space, cost, layouts, survivors: list[list[dict]], budgets: list[float], top: int,
            keep_all: int = 200_000) -> tuple[pd.DataFrame, dict]:
    """The combined table: one row per kept combination (``combo`` holds one survivor index per block).

    Returns ``(table, info)``; ``info`` has the table's full size and the seconds it took.
    """
    t0 = time.perf_counter()
    names = [d.name for d in space.decisions()]
    col = {n: i for i, n in enumerate(names)}
    paths = [np.array([s["path"] for s in surv], dtype=np.int64) for surv in survivors]  # per block (S_b, D_b)
    losses = [np.array([s["loss"] for s in surv]) for surv in survivors]
    terms = _np_terms(cost.terms, col)
    w_terms = [] if cost.cold is None else _np_terms(cost.cold.weights.terms, col)  # MB of weights read per run
    sizes = [len(p) for p in paths]
    total = int(np.prod(sizes))
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for first in range(sizes[0]):
        grids = np.meshgrid(np.array([first]), *(np.arange(s) for s in sizes[1:]), indexing="ij")
        combo = np.stack([g.ravel() for g in grids], 1)  # (n, blocks)
        full = np.zeros((len(combo), len(names)), dtype=np.int64)
        for b, lay in enumerate(layouts):
            full[:, [col[d] for d in lay.decisions]] = paths[b][combo[:, b]]
        ms = _sum_terms(terms, full, cost.overhead_ms)
        if cost.cold is not None:  # the model's weights as a whole (CostModel.value)
            ms += cost.cold.at_array(_sum_terms(w_terms, full, cost.cold.weights.overhead_ms))
        q = np.mean([losses[b][combo[:, b]] for b in range(len(layouts))], 0)
        if total > keep_all:  # keep what can be chosen: this chunk's front and each budget's best
            keep = pareto(ms, q)
            for budget in budgets:
                under = np.flatnonzero(ms <= budget)
                keep[under[np.argsort(q[under], kind="stable")[:top]]] = True
            keep[np.argmin(ms)] = True
            combo, full, ms, q = combo[keep], full[keep], ms[keep], q[keep]
        kept.append((combo, full, ms, q))
    combo = np.concatenate([k[0] for k in kept])
    full = np.concatenate([k[1] for k in kept])
    ms = np.concatenate([k[2] for k in kept])
    q = np.concatenate([k[3] for k in kept])
    table = pd.DataFrame({
        "combo": [",".join(map(str, c)) for c in combo],
        "arch_json": [json.dumps(space.from_indices(dict(zip(names, map(int, row)))).to_dict()) for row in full],
        "predicted_latency_ms": ms, "quality_estimate": q,
    })
    table["is_pareto"] = pareto(ms, q)
    return table, {"combined_table_rows": total, "rows_kept": len(table), "seconds": time.perf_counter() - t0,
                   "survivors_per_block": sizes}


def choose(table: pd.DataFrame, budgets: list[float], top: int, rescore: Callable[[str], float],
           window: tuple[float, float] = (0.0, 1.0)) -> tuple[list[Choice], pd.DataFrame]:
    """Per budget: the ``top`` best estimates within it, re-scored end to end by ``rescore(arch_json)``, best kept.

    Candidates are those predicted within ``window`` x budget when there are any (a model that leaves most of
    its budget unused is rarely what a user wants), else every one below ``window[1]`` x budget. Adds
    ``e2e_error`` (where re-scored) and ``chosen_for_budget_ms`` columns to the table.
    """
    table = table.copy()
    table["e2e_error"] = np.nan
    table["chosen_for_budget_ms"] = ""
    fastest = float(table["predicted_latency_ms"].min())
    out = []
    for budget in budgets:
        ms = table["predicted_latency_ms"]
        under = table[(ms >= window[0] * budget) & (ms <= window[1] * budget)]
        if under.empty:
            under = table[ms <= window[1] * budget]
        if under.empty:
            out.append(Choice(budget, False, None, fastest, []))
            continue
        rows = list(under.sort_values(["quality_estimate", "predicted_latency_ms"], kind="stable").index[:top])
        for r in rows:
            if np.isnan(table.at[r, "e2e_error"]):
                table.at[r, "e2e_error"] = rescore(table.at[r, "arch_json"])
        best = min(rows, key=lambda r: (table.at[r, "e2e_error"], r))
        prev = table.at[best, "chosen_for_budget_ms"]
        table.at[best, "chosen_for_budget_ms"] = f"{prev};{budget:g}" if prev else f"{budget:g}"
        out.append(Choice(budget, True, int(best), fastest, rows))
    return out, table


def combos_of(sizes: list[int]):
    """Every combination index (for tests and small tables)."""
    return itertools.product(*(range(s) for s in sizes))


__all__ = ["Choice", "combine", "choose", "pareto", "combos_of"]
