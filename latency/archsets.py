"""The architectures a search hands the predictor, as sets to measure: homogeneous ones, the extremes of a cost
model, and the results of latency-only searches at a spread of budgets.

A profile measures these whole, besides random architectures (``hwnas profile``), so that the calibration covers
what searches actually return; the budget-fidelity benchmark runs the same latency-only search.

The latency-only search maximises a capacity proxy (expected parameter count) under a hinge budget penalty by
descending on architecture weights alone (:func:`descend`), then bisects the penalty's target until the argmax
architecture lands just under the budget (:func:`latency_search`).

>>> from nas.spaces import get_space
>>> [(a.choices["cells"], a.choices["n0.in0"]) for a in homogeneous_archs(get_space("adabert", "tiny"), 2)][:4]
[(3, 'conv:dilation=1,k=3'), (2, 'conv:dilation=1,k=3'), (2, 'conv:dilation=1,k=5'), (3, 'conv:dilation=1,k=5')]
"""
from __future__ import annotations

import torch

from latency.loss import BudgetPenalty, CostModel, build_cost_model, expected_latency
from nas.arch import Architecture
from nas.spaces.base import SearchSpace
from nas.spaces.ops import op_params

LR, BETAS, TAU_END = 0.05, (0.9, 0.9), 0.03  # Adam (short second-moment memory) and the final temperature
SCHEDULES = (0.0, 0.5)  # share of the steps held at temperature 1 before annealing, one bisection each
SEARCH_FRACTIONS = (0.2, 0.4, 0.6, 0.8)  # budgets a profile's searched architectures aim at (share of the range)


def homogeneous_archs(space: SearchSpace, depths: int = 1) -> list[Architecture]:
    """One op kind everywhere, at the widths (NAS-BERT) or depths (AdaBERT) the space allows.

    AdaBERT: every non-zero edge op on all nine edges, at the most cells (the deep end, where conv-heavy cells
    were mispredicted) and, with ``depths=2``, also at the middle number of cells. The two of a kind come in
    turn deep-middle, middle-deep, ... so that the profile's alternating split puts one of each kind in each
    split (with one depth, an op kind's only homogeneous architecture lay in the test split half the time, and a
    per-kind calibration fitted on random architectures alone mispredicted it by up to 57 %). NAS-BERT: every op
    kind (MHA, FFN, separable conv, identity) on every layer at each block width, its parameter (heads, inner
    width, kernel) rising with the width from the smallest to the largest; with ``depths=2`` also the widest width
    with the second-largest parameter, right after the largest, so that the alternating split puts one of the two
    heaviest models of each kind in each split (with one, the widest FFN model, 17 MB of weights read each run,
    lay in the test split alone, and the calibration never saw a model whose weights outgrow the cache).
    """
    out = []
    if space.name == "adabert":
        cells = space.decision("cells").choices
        levels = [cells[-1], cells[(len(cells) - 1) // 2]][:depths]
        for i, t in enumerate(t for t in space.preset.ops if t != "zero"):
            for k in levels[:: 1 if i % 2 == 0 else -1]:
                out.append(Architecture(space.name, space.version, space.preset.name,
                                        {d.name: k if d.name == "cells" else t for d in space.decisions()}))
    elif space.name == "nasbert":
        p = space.preset
        by_kind: dict[str, list[str]] = {}
        for t in p.op_templates():
            by_kind.setdefault(t.split(":")[0], []).append(t)
        n = len(p.hiddens)
        for templates in by_kind.values():
            picks = [(h, templates[round(w * (len(templates) - 1) / max(n - 1, 1))]) for w, h in enumerate(p.hiddens)]
            if depths >= 2 and len(templates) > 1:  # the widest also with the second-largest parameter, next in turn
                picks.append((p.hiddens[-1], templates[-2]))
            for h, t in picks:
                choices = {d.name: (h if d.name.endswith(".hidden") else t) for d in space.decisions()}
                out.append(Architecture(space.name, space.version, p.name, choices))
    else:  # pragma: no cover - a space registered later
        raise ValueError(f"no homogeneous architectures defined for space {space.name!r}")
    return list({a.key: a for a in out}.values())


def capacity_model(space: SearchSpace, num_labels: int = 2) -> CostModel:
    """Parameters as an additive cost (the capacity a latency-only search maximises)."""
    return build_cost_model(space, lambda s: float(op_params(s)), num_labels, unit="params")


def full_indices(space: SearchSpace, idx: dict[str, int]) -> dict[str, int]:
    """Indices for every decision (decisions no cost term depends on take their first choice)."""
    return {d.name: idx.get(d.name, 0) for d in space.decisions()}


def extreme_archs(space: SearchSpace, cost: CostModel) -> list[Architecture]:
    """The fastest and the slowest architecture under ``cost``."""
    (_, lo), (_, hi) = cost.extremes()
    return [space.from_indices(full_indices(space, lo)), space.from_indices(full_indices(space, hi))]


def descend(space: SearchSpace, cost: CostModel, capacity: CostModel, target_ms: float, steps: int = 400,
            seed: int = 0, hold: float = 0.5) -> dict[str, int]:
    """Argmax choice indices after descending -capacity + hinge(E[lat], target) on the weights alone.

    Softmax over logits at temperature 1 for the first ``hold`` of the steps, then annealed to 0.03 so that the
    weights end near one-hot and the expected latency near the argmax architecture's. Capacity is scaled to
    [0, 1] over the space so that its pull is comparable at every budget.
    """
    g = torch.Generator().manual_seed(seed)
    logits = {d.name: (0.01 * torch.randn(len(d.choices), generator=g, dtype=torch.float64)).requires_grad_()
              for d in space.decisions()}  # (n_choices,)
    opt = torch.optim.Adam(logits.values(), lr=LR, betas=BETAS)
    penalty = BudgetPenalty("hinge", budget_ms=target_ms, weight=10.0)
    (cap_lo, _), (cap_hi, _) = capacity.extremes()
    half = int(steps * hold)
    for step in range(steps):
        tau = 1.0 if step < half else TAU_END ** ((step - half) / (steps - half - 1))  # 1 -> TAU_END
        w = {k: torch.softmax(v / tau, -1) for k, v in logits.items()}  # (n_choices,)
        task = -(expected_latency(w, capacity) - cap_lo) / (cap_hi - cap_lo)
        loss = penalty(task, expected_latency(w, cost))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: int(v.detach().argmax()) for k, v in logits.items()}


def fill_budget(space: SearchSpace, cost: CostModel, capacity: CostModel, idx: dict[str, int], budget_ms: float,
                floor: float = 0.95) -> dict[str, int]:
    """Spend what a search left of ``budget_ms``: a greedy ascent in capacity, then the same with a look-ahead,
    then lateral steps towards ``floor`` x the budget.

    A relaxed search's argmax can stop well under its budget where the space is sparse (near its fastest corner a
    step of the penalty's target jumps over every architecture in the window). The ascent takes the single-decision
    change that adds the most capacity while the predicted latency stays within the budget, until none does; the
    look-ahead then tries every change within the budget (one that loses capacity too) followed by that ascent, and
    keeps the best gain, until none gains. Where the result still lies under ``floor`` x the budget, a change that
    keeps the capacity and raises the latency towards the budget is taken (the most latency within it; e.g. a zero
    edge made a pooling one: a capacity proxy of parameters alone is flat there), each followed by the ascent.
    On the 40 budget-fidelity searches of a Zen 5 torch profile (2026-12-06) the fill ran at 5: the lowest
    predicted share of the budget rose from 0.877 to 0.940 (three under 0.92 to none), with the same or up to
    0.65 % more parameters.
    The result is a local optimum: no one change both adds capacity and stays within the budget.
    """
    sizes = {d.name: len(d.choices) for d in space.decisions()}
    names = list(dict.fromkeys([*cost.decisions(), *capacity.decisions()]))
    cur = full_indices(space, idx)
    if cost.value(cur) > budget_ms:
        return cur

    def moves(at: dict[str, int]):
        for d in names:
            for c in range(sizes[d]):
                if c != at[d]:
                    trial = {**at, d: c}
                    lat = cost.value(trial)
                    if lat <= budget_ms:
                        yield trial, lat

    def ascend(at: dict[str, int]) -> dict[str, int]:
        cap = capacity.value(at)
        while True:
            best = max(((capacity.value(t) - cap, t) for t, _ in moves(at)), key=lambda g: g[0], default=None)
            if best is None or best[0] <= 0:
                return at
            cap, at = cap + best[0], best[1]

    cur = ascend(cur)
    while True:  # look-ahead: one change, then the ascent
        cap = capacity.value(cur)
        best = max(((capacity.value(a) - cap, a) for a in (ascend(t) for t, _ in moves(cur))),
                   key=lambda g: g[0], default=None)
        if best is None or best[0] <= 1e-9:
            break
        cur = best[1]
    while cost.value(cur) < floor * budget_ms:  # lateral: as much capacity, more of the budget
        cap, lat = capacity.value(cur), cost.value(cur)
        up = [(t_lat, t) for t, t_lat in moves(cur) if t_lat > lat and capacity.value(t) >= cap - 1e-9]
        if not up:
            break
        cur = ascend(max(up, key=lambda g: g[0])[1])
    return cur


MARGIN = 0.015  # latency_search: the argmax aimed at [0.95, 1 - MARGIN] x budget (predicted)


def latency_search(space: SearchSpace, cost: CostModel, capacity: CostModel, budget_ms: float, seed: int = 0,
                   max_rounds: int = 8, margin: float = MARGIN, schedules: tuple[float, ...] = SCHEDULES
                   ) -> tuple[dict[str, int], float, int]:
    """Descend, then move the penalty's target (bisection) until the argmax lands in [0.95, 1 - margin] x budget.

    The margin centres the predicted latency in an asymmetric window (0.90 to 1.05 x budget), so that a
    predictor error of about +-7 % either way still lands inside it. Two temperature schedules (annealed from the
    start, or held at 1 for the first half) each run their own bisection; of every argmax architecture seen
    within the budget, the one with the most parameters is kept. When it is predicted under 0.95 x the budget
    (less margin), :func:`fill_budget` spends the rest on capacity.

    Returns:
        (choice indices, predicted ms, descents run).
    """
    seen, runs = [], 0
    budget_ms = budget_ms * (1 - margin)
    for hold in schedules:
        target, lo_t, hi_t = budget_ms, None, None
        for _ in range(max_rounds):
            idx = descend(space, cost, capacity, target, seed=seed, hold=hold)
            runs += 1
            pred = cost.value(idx)
            seen.append((idx, pred))
            if 0.95 * budget_ms <= pred <= budget_ms:
                break
            if pred > budget_ms:
                hi_t = target
            else:
                lo_t = target
            target = (lo_t * hi_t) ** 0.5 if lo_t and hi_t else target * min(1.5, 0.99 * budget_ms / pred)
    within = [(capacity.value(i), p, i) for i, p in seen if p <= budget_ms]
    if not within:
        idx, pred = min(seen, key=lambda t: t[1])
        return idx, pred, runs
    full = [t for t in within if t[1] >= 0.95 * budget_ms]  # those that use the budget, if any
    _, pred, idx = max(full or within, key=lambda t: (t[0], t[1]))
    if not full:
        idx = fill_budget(space, cost, capacity, idx, budget_ms)
        pred = cost.value(idx)
    return idx, pred, runs


def budget_range(cost: CostModel, capacity: CostModel) -> tuple[float, float]:
    """(fastest architecture, the capacity optimum without a budget): budgets above the latter do not bind."""
    (lo, _), _ = cost.extremes()
    _, (_, cap_idx) = capacity.extremes()
    return lo, cost.value({**{d: 0 for d in cost.decisions()}, **cap_idx})


def searched_archs(space: SearchSpace, cost: CostModel, fractions=SEARCH_FRACTIONS, num_labels: int = 2,
                   seed: int = 0, max_rounds: int = 4) -> list[Architecture]:
    """What latency-only searches return at budgets ``fractions`` of the way from the fastest architecture to
    the capacity optimum (distinct architectures, in budget order). One temperature schedule and at most
    ``max_rounds`` descents per budget: the architectures need to be what a search returns, not the best one."""
    capacity = capacity_model(space, num_labels)
    lo, hi = budget_range(cost, capacity)
    out: dict[str, Architecture] = {}
    for f in fractions:
        idx, _, _ = latency_search(space, cost, capacity, lo + f * (hi - lo), seed=seed, max_rounds=max_rounds,
                                   schedules=(SCHEDULES[-1],))
        arch = space.from_indices(full_indices(space, idx))
        out.setdefault(arch.key, arch)
    return list(out.values())


__all__ = ["homogeneous_archs", "extreme_archs", "searched_archs", "latency_search", "fill_budget", "descend",
           "budget_range", "capacity_model", "full_indices", "SEARCH_FRACTIONS"]
