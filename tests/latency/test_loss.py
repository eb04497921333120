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
