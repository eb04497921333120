"""Differentiable expected latency and budget penalties (torch).

A :class:`CostModel` is what a predictor hands the search: a fixed ``overhead_ms`` plus one term per cost factor
of the space, each a tensor of milliseconds over the choices of the 1 or 2 decisions it depends on. Under the
search's (Gumbel-)softmax weights, decisions are independent, so the expected latency is

    E[lat] = overhead + sum_terms  sum_{i,j} w_d1[i] * w_d2[j] * cost[i, j]

which :func:`expected_latency` computes with one einsum per term, for weights with any leading batch dimensions,
on any device. One-hot weights give exactly the predictor's figure for that architecture.

A backend that eliminates common subexpressions (onnxruntime) runs a parameter-free op once per tensor however
many edges apply it; such ops form *shared* terms ``(hub, readers, cost[n_hub, n_choices])``: the cost of choice
``c`` is paid once if any reader picks it, so under independent weights

    E[shared] = sum_{k,c} w_hub[k] * cost[k, c] * (1 - prod_r (1 - w_r[c]))

(exact for one-hot weights again).

>>> import torch
>>> cost = CostModel(1.0, [(("a",), torch.tensor([1.0, 3.0])), (("a", "b"), torch.tensor([[0.0, 1.0], [2.0, 4.0]]))])
>>> w = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([0.5, 0.5])}
>>> float(expected_latency(w, cost))
7.0
>>> round(float(BudgetPenalty("hinge", budget_ms=5.0)(torch.tensor(0.0), torch.tensor(7.0))), 6)
0.4
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from nas.errors import HwnasError
from nas.spaces.base import SharedFactor

if TYPE_CHECKING:
    from nas.spaces.base import SearchSpace
    from nas.spaces.ops import OpSpec


class LossError(HwnasError, ValueError):
    """A penalty name, budget or weight dictionary that the loss cannot use."""


@dataclass
class ColdTerm:
    """A model-level cost that grows with the weights a run reads (``weights``, an MB cost model over the same
    decisions): piecewise linear through ``(knots_mb[i], ms[i])``, flat at ``ms[0]`` before the first knot and
    continuing the last segment's slope beyond the last. Nondecreasing by construction of the predictor (a hinge
    at a knee: ops slow down once a model's weights outgrow the cache; see ``latency.calibration``).

    >>> c = ColdTerm(CostModel(0.0, unit="MB"), (0.0, 10.0, 11.0), (0.0, 0.0, 0.5))
    >>> c.at(8.0), c.at(14.0)
    (0.0, 2.0)
    """

    weights: CostModel  # MB of weights read per run, as an additive cost model (its own runs_as)
    knots_mb: tuple[float, ...]  # increasing
    ms: tuple[float, ...]  # cost at each knot

    def at(self, w_mb: float) -> float:
        """The cost at ``w_mb`` MB of weights."""
        return float(self.at_array(np.asarray(w_mb, dtype=np.float64)))

    def at_tensor(self, w_mb: torch.Tensor) -> torch.Tensor:
        """:meth:`at`, differentiable, for a tensor of MB (any shape)."""
        k, m = self.knots_mb, self.ms
        out = torch.full_like(w_mb, float(m[0]))
        for i in range(1, len(k)):
            slope = (m[i] - m[i - 1]) / (k[i] - k[i - 1])
            seg = (w_mb - k[i - 1]).clamp(min=0.0)
            if i < len(k) - 1:
                seg = seg.clamp(max=k[i] - k[i - 1])
            out = out + slope * seg
        return out

    def at_array(self, w_mb: np.ndarray) -> np.ndarray:
        """:meth:`at` for a numpy array of MB."""
        return np.interp(w_mb, self.knots_mb, self.ms) + np.where(
            np.asarray(w_mb) > self.knots_mb[-1],
            (np.asarray(w_mb) - self.knots_mb[-1]) * self._last_slope(), 0.0)

    def _last_slope(self) -> float:
        k, m = self.knots_mb, self.ms
        return (m[-1] - m[-2]) / (k[-1] - k[-2]) if len(k) > 1 else 0.0

    def to(self, device=None, dtype=None) -> ColdTerm:
        return ColdTerm(self.weights.to(device, dtype), self.knots_mb, self.ms)


Term = tuple[tuple[str, ...], torch.Tensor]  # (decision names, cost tensor [n_choices(d) for d in decisions])
SharedTerm = tuple[str, tuple[str, ...], torch.Tensor]  # (hub, readers, cost [n_hub, n_choices]) paid once per choice
MAX_ENUMERATION = 2_000_000  # extremes(): most combinations of coupled decisions enumerated per hub choice


@dataclass
class CostModel:
    """A model's latency (or any additive cost) as a fixed part plus per-decision tensors."""

    overhead_ms: float  # cost of everything that does not depend on a decision (incl. 0-decision factors)
    terms: list[Term] = field(default_factory=list)  # (decisions, cost tensor of shape [n_choices(d) ...])
    unit: str = "ms"  # what the numbers are ("ms", or "params" for a capacity proxy)
    shared: list[SharedTerm] = field(default_factory=list)  # ops a backend computes once per tensor (see module doc)
    runs_as: Callable[[dict[str, int]], dict[str, int]] | None = field(default=None, repr=False, compare=False)
    # ^ the space's runs_as: what a discrete architecture runs (value() prices that; the expectation does not)
    cold: ColdTerm | None = None  # a cost of the model's weights as a whole (see ColdTerm); None: a plain sum

    def decisions(self) -> list[str]:
        """Every decision some term depends on, in first-seen order."""
        seen: dict[str, None] = {}
        for names, _ in self.terms:
            seen.update(dict.fromkeys(names))
        for hub, readers, _ in self.shared:
            seen.update(dict.fromkeys((hub, *readers)))
        if self.cold is not None:
            seen.update(dict.fromkeys(self.cold.weights.decisions()))
        return list(seen)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CostModel:
        return CostModel(self.overhead_ms, [(n, c.to(device=device, dtype=dtype)) for n, c in self.terms], self.unit,
                         [(h, r, c.to(device=device, dtype=dtype)) for h, r, c in self.shared], self.runs_as,
                         None if self.cold is None else self.cold.to(device, dtype))

    def value(self, indices: dict[str, int]) -> float:
        """The cost of one architecture given its choice indices (the one-hot case, without tensors of weights),
        as its model runs (``runs_as``: AdaBERT's dead cells cost nothing)."""
        cold = 0.0 if self.cold is None else self.cold.at(self.cold.weights.value(indices))
        if self.runs_as is not None:
            indices = self.runs_as(indices)
        total = self.overhead_ms + cold
        for names, cost in self.terms:
            total += float(cost[tuple(indices[d] for d in names)])
        for hub, readers, cost in self.shared:
            total += sum(float(cost[indices[hub], c]) for c in {indices[r] for r in readers})
        return total

    def range(self) -> tuple[float, float]:
        """A quick (lower, upper) bound over architectures: each term at its own min / max."""
        lo = self.overhead_ms + sum(float(c.min()) for _, c in self.terms)
        hi = self.overhead_ms + sum(float(c.max()) for _, c in self.terms)
        for _, readers, c in self.shared:
            lo += min(float(c.min()), 0.0)
            hi += float(c.clamp(min=0).sort(-1, descending=True).values[:, : len(readers)].sum(-1).max())
        if self.cold is not None:  # nondecreasing in the weights
            w_lo, w_hi = self.cold.weights.range()
            lo, hi = lo + self.cold.at(w_lo), hi + self.cold.at(w_hi)
        return lo, hi

    def linear(self) -> CostModel:
        """The same model without its cold term (a plain sum over decisions)."""
        return dataclasses.replace(self, cold=None)

    def extremes(self) -> tuple[tuple[float, dict[str, int]], tuple[float, dict[str, int]]]:
        """``((min, indices), (max, indices))`` over architectures: exact for a plain sum.

        The decisions that lead a 2-decision term or a shared term (AdaBERT's ``cells``, NAS-BERT's block widths)
        are enumerated; given them, every other decision is independent, except the readers of shared terms:
        those are enumerated over the shared choices plus their best other choice, skipping a reader whose best
        other choice beats every shared one even at its full shared cost. Decisions no term depends on are left
        out of ``indices``.

        With a cold term (a nondecreasing function of the weights read), the fastest is the faster of the sum's
        fastest and the lightest architecture, and the slowest the slower of the sum's slowest and the heaviest,
        each priced whole: exact whenever the sum's fastest is also among the lightest-weighted and its slowest
        among the heaviest, as in the shipped spaces, where the cost of an op grows with its weights.
        """
        if self.cold is not None:
            (_, lo), (_, hi) = self.linear().extremes()
            (_, w_lo), (_, w_hi) = self.cold.weights.extremes()
            full = {d: 0 for d in self.decisions()}
            lo_c = [(self.value({**full, **i}), {**full, **i}) for i in (lo, w_lo)]
            hi_c = [(self.value({**full, **i}), {**full, **i}) for i in (hi, w_hi)]
            return min(lo_c, key=lambda t: t[0]), max(hi_c, key=lambda t: t[0])
        hubs = list(dict.fromkeys([n[0] for n, _ in self.terms if len(n) == 2] + [h for h, _, _ in self.shared]))
        size = {d: c.shape[i] for n, c in self.terms for i, d in enumerate(n)}
        for h, readers, c in self.shared:
            size.update({h: c.shape[0], **dict.fromkeys(readers, c.shape[1])})
        if any(sum(d not in hubs for d in n) > 1 for n, _ in self.terms):  # pragma: no cover - no such space yet
            raise LossError("extremes(): a term couples two non-leading decisions; enumerate them explicitly")
        best: list = [None, None]
        for combo in itertools.product(*(range(size[h]) for h in hubs)):
            fixed = dict(zip(hubs, combo))
            base, free = self.overhead_ms, {}
            for n, c in self.terms:
                idx = tuple(fixed.get(d, slice(None)) for d in n)
                part = c[idx].to(torch.float64)
                if part.dim() == 0:
                    base += float(part)
                else:
                    d = next(d for d in n if d not in fixed)
                    free[d] = free[d] + part if d in free else part.clone()
            shared = [(readers, c[fixed[h]].to(torch.float64)) for h, readers, c in self.shared]
            for d in {r for readers, _ in shared for r in readers}:
                free.setdefault(d, torch.zeros(size[d], dtype=torch.float64))
            for k in range(2):
                total, choice = _best_given_hubs(base, free, shared, maximise=k == 1)
                if best[k] is None or (total < best[k][0] if k == 0 else total > best[k][0]):
                    best[k] = (total, {**fixed, **choice})
        if best[0] is None:
            return (self.overhead_ms, {}), (self.overhead_ms, {})
        return best[0], best[1]


def _best_given_hubs(base: float, free: dict[str, torch.Tensor], shared: list[tuple[tuple[str, ...], torch.Tensor]],
                     maximise: bool) -> tuple[float, dict[str, int]]:
    """The cheapest (or dearest) choices once the hubs are fixed: ``free[d]`` is decision d's own cost per choice;
    each shared ``(readers, cost[n_choices])`` adds ``cost[c]`` once for every distinct choice c its readers take."""
    sign = -1.0 if maximise else 1.0
    pick = torch.argmax if maximise else torch.argmin
    choice = {d: int(pick(v)) for d, v in free.items()}
    live = sorted({c for _, cost in shared for c in torch.nonzero(cost).flatten().tolist()})
    readers_all = {r for readers, _ in shared for r in readers}
    negative = any(float(cost.min()) < 0 for _, cost in shared)  # no bound on a shared choice: enumerate them all
    coupled = []
    for d in sorted(readers_all) if live else ():
        v = free[d]
        rest = [c for c in range(len(v)) if c not in live]
        if not rest or negative:
            choice[d] = rest[int(pick(v[rest]))] if rest else live[0]
            coupled.append(d)
            continue
        choice[d] = rest[int(pick(v[rest]))]
        # the best shared choice at its best case (minimise: own cost only; maximise: own + all its shared costs)
        extra = sum((cost for readers, cost in shared if d in readers), torch.zeros_like(v)) if maximise else 0
        if float((sign * ((v + extra)[live] - v[choice[d]])).min()) < 0:
            coupled.append(d)
    total = base + sum(float(free[d][c]) for d, c in choice.items())
    total += sum(float(cost[c]) for readers, cost in shared for c in {choice[r] for r in readers})
    if not coupled:
        return total, choice
    cands = [sorted(set(live) | ({choice[d]} if choice[d] not in live else set())) for d in coupled]
    n = math.prod(len(c) for c in cands)
    if n > MAX_ENUMERATION:  # pragma: no cover - no space this large yet
        raise LossError(f"extremes(): {n} combinations of shared-op choices; enumerate them explicitly")
    grid = torch.cartesian_prod(*[torch.tensor(c) for c in cands]).reshape(n, len(coupled))  # (n, coupled)
    col = {d: i for i, d in enumerate(coupled)}
    fixed_part = base + sum(float(free[d][c]) for d, c in choice.items() if d not in col)
    tot = torch.full((n,), fixed_part, dtype=torch.float64)  # (n,)
    for d, i in col.items():
        tot += free[d][grid[:, i]]
    for readers, cost in shared:  # readers left out of the grid take a non-shared choice: only the grid can hit c
        for c in live:
            hit = torch.zeros(n, dtype=torch.bool)
            for r in readers:
                if r in col:
                    hit |= grid[:, col[r]] == c
            tot += float(cost[c]) * hit
    j = int(pick(tot))
    return float(tot[j]), {**choice, **{d: int(grid[j, i]) for d, i in col.items()}}


def build_cost_model(space: SearchSpace, per_op: Callable[[OpSpec], float], num_labels: int = 2,
                     overhead: float = 0.0, unit: str = "ms", dtype: torch.dtype = torch.float64,
                     cse: bool = False) -> CostModel:
    """Turn ``space.cost_factors()`` into a :class:`CostModel` with ``per_op(spec)`` as each op's cost.

    Each cell's cost is ``sum(count * per_op(spec))`` over the ops that run for that combination of choices;
    factors with no decision go to the overhead.

    Args:
        space: the search space.
        per_op: cost of one run of an op (ms for latency, a parameter count for capacity).
        num_labels: classifier width (the head op depends on it).
        overhead: a fixed extra cost (e.g. a predictor's per-call overhead).
        unit: label stored on the result.
        dtype: dtype of the cost tensors.
        cse: the backend computes a parameter-free op once per tensor (onnxruntime): shared terms for those ops.
    Returns:
        The cost model.
    """
    sizes = {d.name: len(d.choices) for d in space.decisions()}
    cache: dict[OpSpec, float] = {}

    def cell_cost(bag) -> float:
        total = 0.0
        for spec, count in bag:
            if spec not in cache:
                cache[spec] = float(per_op(spec))
            total += count * cache[spec]
        return total

    terms: list[Term] = []
    shared: list[SharedTerm] = []
    for f in space.cost_factors(num_labels, cse):
        if isinstance(f, SharedFactor):
            cost = torch.zeros(sizes[f.hub], sizes[f.readers[0]], dtype=dtype)  # (n_hub, n_choices)
            for k, n in f.tensors.items():
                for c, bag in f.ops.items():
                    cost[k, c] = n * cell_cost(bag)
            shared.append((f.hub, tuple(f.readers), cost))
            continue
        if not f.decisions:
            overhead += cell_cost(f.cells[()])
            continue
        cost = torch.zeros([sizes[d] for d in f.decisions], dtype=dtype)  # [n_choices(d) for d in decisions]
        for idx, bag in f.cells.items():
            cost[idx] = cell_cost(bag)
        terms.append((tuple(f.decisions), cost))
    return CostModel(float(overhead), terms, unit, shared, space.runs_as)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def expected_latency(weights: dict[str, torch.Tensor], cost: CostModel) -> torch.Tensor:
    """Expected cost under independent per-decision weights.

    Args:
        weights: decision name -> tensor ``(..., n_choices)`` of weights (softmax / Gumbel-softmax / one-hot);
            leading dimensions must broadcast against each other.
        cost: the cost model (its tensors are moved to the weights' device and dtype).
    Returns:
        Tensor ``(...)`` of expected milliseconds.

    >>> import torch
    >>> cost = CostModel(0.5, [(("d",), torch.tensor([1.0, 2.0]))])
    >>> expected_latency({"d": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}, cost).tolist()
    [1.5, 2.5]
    """
    if not weights:
        raise LossError("expected_latency: no weights given; pass one (..., n_choices) tensor per decision")
    ref = next(iter(weights.values()))
    missing = [d for d in cost.decisions() if d not in weights]
    if missing:
        raise LossError(f"expected_latency: no weights for decision(s) {missing}; the cost model needs "
                        f"{cost.decisions()}")
    total = None
    for names, c in cost.terms:
        ws = [weights[d] for d in names]
        for axis, (d, w) in enumerate(zip(names, ws)):
            if w.shape[-1] != c.shape[axis]:
                raise LossError(f"expected_latency: weights for {d!r} have {w.shape[-1]} choices, "
                                f"the cost model has {c.shape[axis]}")
        c = c.to(device=ref.device, dtype=ref.dtype)  # [n_d1(, n_d2)]
        subs = ",".join(f"...{_LETTERS[i]}" for i in range(len(ws))) + "," + _LETTERS[: len(ws)] + "->..."
        term = torch.einsum(subs, *ws, c)  # (...)
        total = term if total is None else total + term
    for hub, readers, c in cost.shared:
        c = c.to(device=ref.device, dtype=ref.dtype)  # (n_hub, n_choices)
        none = torch.stack(torch.broadcast_tensors(*[1 - weights[r] for r in readers]), 0).prod(0)  # (..., n_choices)
        term = torch.einsum("...k,...c,kc->...", weights[hub], 1 - none, c)  # (...)
        total = term if total is None else total + term
    if total is None:
        total = torch.zeros(ref.shape[:-1], device=ref.device, dtype=ref.dtype)  # (...)
    if cost.cold is not None:  # at the expected weights: exact for one-hot weights
        total = total + cost.cold.at_tensor(expected_latency(weights, cost.cold.weights))
    return total + cost.overhead_ms


def one_hot_weights(space: SearchSpace, indices: dict[str, int], dtype: torch.dtype = torch.float64
                    ) -> dict[str, torch.Tensor]:
    """One-hot weights ``{decision: (n_choices,)}`` for the architecture with these choice indices."""
    out = {}
    for d in space.decisions():
        w = torch.zeros(len(d.choices), dtype=dtype)  # (n_choices,)
        w[indices[d.name]] = 1.0
        out[d.name] = w
    return out


def argmax_indices(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """The most likely choice of every decision (weights without batch dimensions)."""
    return {d: int(w.argmax(-1)) for d, w in weights.items()}


# ------------------------------------------------------------------------------------------- penalties
def _hinge(task_loss, e, budget, weight, beta):
    return task_loss + weight * torch.relu(e / budget - 1.0)


def _mul_log(task_loss, e, budget, weight, beta):
    # logs of microseconds, so that budgets below 1 ms keep log(budget) > 0 (ProxylessNAS used ms on ~80 ms)
    ratio = torch.log(e * 1000.0) / math.log(budget * 1000.0)
    return weight * task_loss * ratio.clamp(min=1e-6) ** beta


def _add_linear(task_loss, e, budget, weight, beta):
    return task_loss + weight * (e - budget) / budget


WINDOW_LO = 0.9  # lower edge of the "window" penalty, as a fraction of the budget


def _window(task_loss, e, budget, weight, beta):
    # a budget is a target as much as a cap: the most accurate model under it uses it, so push from both sides
    return task_loss + weight * (torch.relu(e / budget - 1.0) + torch.relu(WINDOW_LO - e / budget))


PENALTIES: dict[str, tuple[Callable, float, str]] = {
    "hinge": (_hinge, 1.0, "task + weight * max(0, E/budget - 1)"),
    "mul#log": (_mul_log, 1.0, "weight * task * (log E / log budget)^beta  (ProxylessNAS; logs of microseconds)"),
    "add#linear": (_add_linear, 0.2, "task + weight * (E - budget) / budget  (ProxylessNAS additive)"),
    "window": (_window, 1.0, "task + weight * (max(0, E/budget - 1) + max(0, 0.9 - E/budget))  (two-sided hinge)"),
}
PENALTIES["linear"] = PENALTIES["add#linear"]


@dataclass
class BudgetPenalty:
    """A latency-budget loss, selected by name: ``hinge``, ``mul#log``, ``add#linear`` (alias ``linear``) or
    ``window`` (a two-sided hinge that also pushes up to 0.9 x budget).

    ``penalty(task_loss, expected_ms)`` returns the combined loss; ``weight`` defaults per penalty
    (1.0, 1.0, 0.2, 1.0) and ``beta`` is the exponent of ``mul#log``.

    >>> import torch
    >>> p = BudgetPenalty("mul#log", budget_ms=10.0, beta=0.6)
    >>> round(float(p(torch.tensor(2.0), torch.tensor(10.0))), 6)
    2.0
    """

    name: str  # penalty name (see PENALTIES)
    budget_ms: float  # latency budget
    weight: float | None = None  # strength (None: the penalty's default)
    beta: float = 0.6  # exponent of mul#log

    def __post_init__(self) -> None:
        if self.name not in PENALTIES:
            raise LossError(f"unknown budget penalty {self.name!r}; choose one of {', '.join(sorted(PENALTIES))}")
        if not self.budget_ms > 0:
            raise LossError(f"budget_ms must be positive, got {self.budget_ms}")
        if self.name == "mul#log" and self.budget_ms * 1000.0 <= 1.0:
            raise LossError("mul#log needs a budget above 1 microsecond; use 'hinge' for such budgets")
        if self.weight is None:
            self.weight = PENALTIES[self.name][1]

    def __call__(self, task_loss: torch.Tensor | float, expected_ms: torch.Tensor) -> torch.Tensor:
        fn = PENALTIES[self.name][0]
        task = torch.as_tensor(task_loss, dtype=expected_ms.dtype, device=expected_ms.device)
        return fn(task, expected_ms, self.budget_ms, self.weight, self.beta)


def budget_penalty(name: str, task_loss: torch.Tensor | float, expected_ms: torch.Tensor, budget_ms: float,
                   **params) -> torch.Tensor:
    """Functional form of :class:`BudgetPenalty`."""
    return BudgetPenalty(name, budget_ms, **params)(task_loss, expected_ms)
