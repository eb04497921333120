"""The differentiable expected latency: gradients, one-hot agreement with predict, descent under a budget."""
from __future__ import annotations

import random

import pytest
import torch

from latency.loss import (
    PENALTIES,
    BudgetPenalty,
    CostModel,
    LossError,
    argmax_indices,
    budget_penalty,
    build_cost_model,
    expected_latency,
    one_hot_weights,
)
from latency.predictor import KINDS, fit
from nas.spaces import Context, get_space
from nas.spaces.ops import op_params

CTX = Context(1, 32)


@pytest.fixture(scope="module")
def predictors(synth_profile):
    return {k: fit(synth_profile, k) for k in KINDS}


def _softmax_weights(space, seed: int, batch: tuple[int, ...] = (), dtype=torch.float64, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    logits = {d.name: torch.randn(*batch, len(d.choices), generator=g, dtype=dtype).requires_grad_(grad)
              for d in space.decisions()}  # (..., n_choices)
    return logits


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_gradient_matches_finite_differences(predictors, name):
    space = get_space(name, "tiny")
    cost = predictors["lut+calibration"].cost_matrix(space, CTX)
    logits = _softmax_weights(space, seed=1, grad=True)
    keys = list(logits)

    def f(*ls):
        return expected_latency({k: torch.softmax(v, -1) for k, v in zip(keys, ls)}, cost)

    assert torch.autograd.gradcheck(f, tuple(logits[k] for k in keys), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_one_hot_equals_predict(predictors, kind, name):
    pred, space = predictors[kind], get_space(name, "tiny")
    for ctx in (CTX, Context(4, 48)):  # a grid Context and an interpolated one
        cost = pred.cost_matrix(space, ctx)
        for seed in range(8):
            arch = space.sample(seed)
            w = one_hot_weights(space, space.indices(arch))
            e = float(expected_latency(w, cost))
            assert e == pytest.approx(pred.predict(arch, ctx), rel=1e-12, abs=1e-12)
            assert cost.value(space.indices(arch)) == pytest.approx(e, rel=1e-12)


def test_batched_weights_match_one_by_one(predictors):
    space = get_space("nasbert", "tiny")
    cost = predictors["lut"].cost_matrix(space, CTX)
    logits = _softmax_weights(space, seed=3, batch=(2, 3))
    w = {k: torch.softmax(v, -1) for k, v in logits.items()}  # (2, 3, n)
    e = expected_latency(w, cost)  # (2, 3)
    assert e.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            single = expected_latency({k: v[i, j] for k, v in w.items()}, cost)
            assert float(single) == pytest.approx(float(e[i, j]), rel=1e-12)


def test_float32_and_device_follow_the_weights(predictors):
    space = get_space("adabert", "tiny")
    cost = predictors["lut"].cost_matrix(space, CTX)
    w = {k: torch.softmax(v, -1) for k, v in _softmax_weights(space, 0, dtype=torch.float32).items()}
    e = expected_latency(w, cost)
    assert e.dtype == torch.float32
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        e2 = expected_latency({k: v.to(dev) for k, v in w.items()}, cost)
        assert e2.device.type == dev and float(e2) == pytest.approx(float(e), rel=1e-5)


def test_missing_or_misshapen_weights_are_errors(predictors):
    space = get_space("nasbert", "tiny")
    cost = predictors["lut"].cost_matrix(space, CTX)
    w = one_hot_weights(space, space.indices(space.sample(0)))
    with pytest.raises(LossError, match="no weights for decision"):
        expected_latency({k: v for k, v in w.items() if k != "layer0.op"}, cost)
    w["layer0.op"] = torch.ones(3, dtype=torch.float64)
    with pytest.raises(LossError, match="choices"):
        expected_latency(w, cost)


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_descent_on_weights_alone_meets_the_budget(predictors, name):
    space = get_space(name, "tiny")
    cost = predictors["lut+calibration"].cost_matrix(space, CTX)
    capacity = build_cost_model(space, lambda s: float(op_params(s)), unit="params")
    lo, hi = cost.range()
    budget = lo + 0.3 * (hi - lo)
    torch.manual_seed(0)
    logits = {d.name: torch.zeros(len(d.choices), dtype=torch.float64, requires_grad=True)
              for d in space.decisions()}  # (n_choices,)
    opt = torch.optim.Adam(logits.values(), lr=0.1)
    penalty = BudgetPenalty("hinge", budget_ms=budget, weight=20.0)
    cap_scale = capacity.range()[1]
    with torch.no_grad():
        start = float(expected_latency({k: torch.softmax(v, -1) for k, v in logits.items()}, cost))
    assert start > budget  # uniform weights start over budget, or the test shows nothing
    for _ in range(300):
        w = {k: torch.softmax(v, -1) for k, v in logits.items()}
        task = -expected_latency(w, capacity) / cap_scale  # maximise capacity
        loss = penalty(task, expected_latency(w, cost))
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = {k: torch.softmax(v.detach(), -1) for k, v in logits.items()}
    e = float(expected_latency(w, cost))
    assert e <= budget * 1.02
    assert e >= budget * 0.7  # capacity pushes it up against the budget, not far below
    assert isinstance(argmax_indices(w)[space.decisions()[0].name], int)


def test_penalties_by_name():
    e = torch.tensor(12.0, dtype=torch.float64)
    ce = torch.tensor(0.7, dtype=torch.float64)
    assert float(budget_penalty("hinge", ce, e, 10.0)) == pytest.approx(0.7 + 0.2)
    assert float(budget_penalty("hinge", ce, torch.tensor(8.0), 10.0)) == pytest.approx(0.7)
    assert float(budget_penalty("add#linear", ce, e, 10.0)) == pytest.approx(0.7 + 0.2 * 0.2)
    assert float(budget_penalty("linear", ce, e, 10.0, weight=1.0)) == pytest.approx(0.9)
    import math

    expect = 0.7 * (math.log(12000) / math.log(10000)) ** 0.6
    assert float(budget_penalty("mul#log", ce, e, 10.0)) == pytest.approx(expect)
    for name in ("hinge", "mul#log", "add#linear"):
        eg = e.clone().requires_grad_()
        (g,) = torch.autograd.grad(budget_penalty(name, ce, eg, 10.0), eg)
        assert float(g) > 0  # over budget: every penalty pushes latency down
    assert set(PENALTIES) >= {"hinge", "mul#log", "add#linear"}


def test_unknown_penalty_and_bad_budget_are_errors():
    with pytest.raises(LossError, match="unknown budget penalty 'l2'.*hinge"):
        BudgetPenalty("l2", budget_ms=1.0)
    with pytest.raises(LossError, match="positive"):
        BudgetPenalty("hinge", budget_ms=0.0)


def test_cost_model_of_a_toy_space_by_hand():
    cost = CostModel(1.0, [(("a", "b"), torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))])
    w = {"a": torch.tensor([0.25, 0.75], dtype=torch.float64), "b": torch.tensor([0.5, 0.5], dtype=torch.float64)}
    # 1 + .25*.5*(1+2) + .75*.5*(3+4)
    assert float(expected_latency(w, cost)) == pytest.approx(1 + 0.375 + 2.625)
    assert cost.decisions() == ["a", "b"]


def test_capacity_cost_model_matches_analytic_params():
    rng = random.Random(0)
    for name in ("adabert", "nasbert"):
        space = get_space(name, "tiny")
        cap = build_cost_model(space, lambda s: float(op_params(s)), unit="params")
        for _ in range(4):
            arch = space.sample(rng)
            assert cap.value(space.indices(arch)) == pytest.approx(space.analytic_params(arch))


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_exact_extremes_match_brute_force(predictors, name):
    space = get_space(name, "tiny")
    cost = predictors["lut+calibration"].cost_matrix(space, CTX)
    (lo, lo_idx), (hi, hi_idx) = cost.extremes()
    values = [cost.value(space.indices(a)) for a in space.enumerate(limit=20000)]
    if space.size() <= 20000:
        assert lo == pytest.approx(min(values)) and hi == pytest.approx(max(values))
    assert lo <= min(values) + 1e-12 and hi >= max(values) - 1e-12
    full = {d.name: 0 for d in space.decisions()}
    assert cost.value({**full, **lo_idx}) == pytest.approx(lo)
    assert cost.value({**full, **hi_idx}) == pytest.approx(hi)
    assert cost.range()[0] <= lo < hi <= cost.range()[1]


def _toy_shared_model(seed: int, big_shared: bool) -> CostModel:
    """A hub of 2 choices, 4 readers of 4 choices (choices 2 and 3 shareable), one shared group of all readers
    and one of the last two; by hand so that brute force over 2 * 4**4 architectures is cheap."""
    g = torch.Generator().manual_seed(seed)
    readers = ("r0", "r1", "r2", "r3")
    terms = [(("hub", r), torch.rand(2, 4, generator=g, dtype=torch.float64)) for r in readers]
    terms.append((("hub",), torch.rand(2, generator=g, dtype=torch.float64)))
    shared = []
    for group in (readers, readers[2:]):
        c = torch.zeros(2, 4, dtype=torch.float64)
        c[:, 2:] = torch.rand(2, 2, generator=g, dtype=torch.float64) * (5.0 if big_shared else 0.2)
        shared.append(("hub", group, c))
    return CostModel(0.5, terms, "ms", shared)


@pytest.mark.parametrize("seed", range(6))
def test_shared_terms_extremes_value_and_expectation_by_brute_force(seed):
    import itertools

    cost = _toy_shared_model(seed, big_shared=seed % 2 == 0)
    names = ["hub", "r0", "r1", "r2", "r3"]
    combos = [dict(zip(names, c)) for c in itertools.product(range(2), *[range(4)] * 4)]
    values = []
    for idx in combos:
        by_hand = cost.overhead_ms + sum(float(c[tuple(idx[d] for d in n)]) for n, c in cost.terms)
        for hub, readers, c in cost.shared:
            by_hand += sum(float(c[idx[hub], k]) for k in {idx[r] for r in readers})
        assert cost.value(idx) == pytest.approx(by_hand)
        w = {d: torch.nn.functional.one_hot(torch.tensor(idx[d]), 2 if d == "hub" else 4).double() for d in names}
        assert float(expected_latency(w, cost)) == pytest.approx(by_hand)
        values.append(by_hand)
    (lo, lo_idx), (hi, hi_idx) = cost.extremes()
    assert lo == pytest.approx(min(values)) and hi == pytest.approx(max(values))
    assert cost.value(lo_idx) == pytest.approx(lo) and cost.value(hi_idx) == pytest.approx(hi)
    assert cost.range()[0] <= lo < hi <= cost.range()[1]
    # soft weights: the expectation over independent choices, by enumeration
    g = torch.Generator().manual_seed(seed)
    w = {d: torch.softmax(torch.randn(2 if d == "hub" else 4, generator=g, dtype=torch.float64), -1) for d in names}
    mean = sum(v * float(torch.prod(torch.stack([w[d][idx[d]] for d in names]))) for idx, v in zip(combos, values))
    assert float(expected_latency(w, cost)) == pytest.approx(mean)


def test_cse_cost_model_matches_the_deduplicated_op_bag(predictors):
    """AdaBERT with cse: one-hot expectation, value and predict agree, and a pooling-heavy cell costs less than
    without cse (repeated pooling of one tensor counted once)."""
    space = get_space("adabert", "tiny")
    pred = predictors["lut+calibration"]
    assert pred.cse  # the synthetic profile is onnxruntime
    cost = pred.cost_matrix(space, CTX)
    assert cost.shared
    plain = build_cost_model(space, lambda s: 1.0, cse=False)
    deduped = build_cost_model(space, lambda s: 1.0, cse=True)
    for seed in range(12):
        arch = space.sample(seed)
        idx = space.indices(arch)
        w = one_hot_weights(space, idx)
        assert float(expected_latency(w, cost)) == pytest.approx(pred.predict(arch, CTX))
        assert cost.value(idx) == pytest.approx(pred.predict(arch, CTX))
        # unit costs count ops: the shared model counts the deduplicated bag
        assert deduped.value(idx) == pytest.approx(sum(space.arch_ops(arch, cse=True).values()))
        assert plain.value(idx) == pytest.approx(sum(space.arch_ops(arch).values()))
    pool = {d.name: d.index("maxpool:k=3") for d in space.decisions() if d.name != "cells"}
    pooled = space.from_indices({"cells": 2, **pool})
    assert deduped.value(space.indices(pooled)) < plain.value(space.indices(pooled))
