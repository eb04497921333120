"""The cold-weights term: a per-model cost of the weights a run reads beyond a knee (ops slow down once a model's
weights outgrow the cache), fitted by the calibration and carried exactly by the cost model."""
from __future__ import annotations

import copy
import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from latency.calibration import CalibrationSpec, Row, fit_calibration
from latency.loss import ColdTerm, CostModel, expected_latency, one_hot_weights
from latency.predictor import fit
from latency.profile_data import PredictorError
from nas.spaces import Context, OpSpec, get_space
from nas.spaces.ops import op_params, weights_mb, weights_read_mb

CTXS = (Context(1, 32), Context(1, 128), Context(8, 32))
FFN = [OpSpec.parse(f"ffn:inner={i}|h=256") for i in (256, 512, 768, 1024)]
SPEC = CalibrationSpec(alpha=("one",), harness=(), cold=("one", "log_tokens"), knees=(4.0, 8.0, 12.0, 16.0))


def test_weights_read_leave_out_the_looked_up_word_table():
    e = get_space("nasbert", "small").embed_spec(256)
    assert weights_read_mb(e) == pytest.approx(4e-6 * (op_params(e) - 30522 * 128))
    assert weights_read_mb(FFN[-1]) == pytest.approx(4e-6 * op_params(FFN[-1])) == pytest.approx(2.1, abs=0.01)
    assert weights_read_mb(OpSpec.parse("identity|h=256")) == 0.0
    assert weights_mb(Counter({FFN[-1]: 8})) == pytest.approx(8 * weights_read_mb(FFN[-1]))


def _op_ms(spec: OpSpec, ctx: Context) -> float:
    return (0.01 + 0.02 * weights_read_mb(spec)) * ctx.tokens / 32  # the op in its own graph: weights in cache


def _rows(knee: float | None, slope: float, n: int, seed: int) -> list[Row]:
    """Models of 2-12 FFN layers (1-25 MB of weights); beyond ``knee`` MB each costs ``slope`` ms per MB more at
    32 tokens, less at more tokens (the cold reads overlap more compute)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        bag = Counter(rng.choice(FFN) for _layer in range(rng.randint(2, 12)))
        key = ",".join(f"{s.key}x{c}" for s, c in sorted(bag.items(), key=lambda t: t[0].key))
        for ctx in CTXS:
            ms = 0.05 + sum(c * _op_ms(s, ctx) for s, c in bag.items())
            if knee is not None:
                ms += slope * 32 / ctx.tokens * max(0.0, weights_mb(bag) - knee)
            rows.append(Row("nasbert", ctx, bag, ms * (1 + 0.003 * rng.uniform(-1, 1)), key))
    return rows


def _fit(rows):
    return fit_calibration(rows, lambda sp, specs, c: np.array([_op_ms(s, c) for s in specs]),
                           lambda sp, c, w: 0.0, SPEC)


def _predict(layer, row: Row) -> float:
    specs = list(row.bag)
    ms = layer.apply_ops("nasbert", specs, np.array([_op_ms(s, row.ctx) for s in specs]), row.ctx)
    return layer.apply_overhead("nasbert", 0.0, row.ctx, weights_mb(row.bag)) + sum(
        row.bag[s] * m for s, m in zip(specs, ms))


def test_calibration_finds_the_knee_and_predicts_heavier_models():
    layer = _fit(_rows(knee=12.0, slope=0.02, n=30, seed=0))
    cold = layer.coef["nasbert"]["cold"]
    assert cold["knee_mb"] == 12.0
    held_out = [r for r in _rows(knee=12.0, slope=0.02, n=80, seed=1) if weights_mb(r.bag) > 16]
    assert len(held_out) >= 9 * 3  # nine architectures, three Contexts each
    errors = [abs(_predict(layer, r) / r.measured_ms - 1) for r in held_out]
    assert max(errors) < 0.02
    without = fit_calibration(_rows(knee=12.0, slope=0.02, n=30, seed=0),
                              lambda sp, specs, c: np.array([_op_ms(s, c) for s in specs]), lambda sp, c, w: 0.0,
                              CalibrationSpec(alpha=("one",), harness=()))
    assert "cold" not in without.coef["nasbert"]
    assert max(abs(_predict(without, r) / r.measured_ms - 1) for r in held_out) > 3 * max(errors)


def test_no_cold_term_where_models_do_not_slow_down():
    layer = _fit(_rows(knee=None, slope=0.0, n=30, seed=0))
    held_out = _rows(knee=None, slope=0.0, n=20, seed=2)
    assert max(abs(_predict(layer, r) / r.measured_ms - 1) for r in held_out) < 0.01


def test_cold_term_round_trips_and_never_subtracts():
    layer = _fit(_rows(knee=12.0, slope=0.02, n=30, seed=0))
    bad = copy.deepcopy(layer.to_dict())
    del bad["coef"]["nasbert"]["cold"]["knee_mb"]
    with pytest.raises(PredictorError, match="malformed cold-weights term of space 'nasbert'.*hwnas fit"):
        type(layer).from_dict(bad)
    back = type(layer).from_dict(copy.deepcopy(layer.to_dict()))
    assert back.spec == layer.spec and back.coef == layer.coef
    far = Context(64, 512)  # slope(ctx) falls with tokens; far beyond the rows it would cross zero: clamped
    assert back.apply_overhead("nasbert", 0.0, far, 100.0) >= back.apply_overhead("nasbert", 0.0, far, 0.0)


def test_cold_term_pieces_by_hand():
    c = ColdTerm(CostModel(0.0, unit="MB"), (0.0, 2.0, 5.0, 6.0), (0.0, 0.0, 0.3, 0.5))
    for w, want in ((-1.0, 0.0), (1.0, 0.0), (3.0, 0.1), (5.5, 0.4), (10.0, 1.3)):
        assert c.at(w) == pytest.approx(want)
        assert float(c.at_tensor(torch.tensor(w, dtype=torch.float64))) == pytest.approx(want)
        assert float(c.at_array(np.array([w]))[0]) == pytest.approx(want)


@pytest.fixture(scope="module")
def cold_predictor(synth_profile):
    """The synthetic profile's calibrated predictor with a cold term put in by hand: from the median weights of
    sampled tiny architectures on, 10 % of a median model's latency per span of their weights."""
    pred = fit(synth_profile, "lut+calibration")
    layer = pred.layers[0]
    for name in ("adabert", "nasbert"):
        space = get_space(name, "tiny")
        archs = [space.sample(s) for s in range(16)]
        w = sorted(weights_mb(pred.arch_bag(a)[1]) for a in archs)
        ms = float(np.median([pred.predict(a, CTXS[0]) for a in archs]))
        layer.coef[name]["cold"] = {"knee_mb": w[8], "slope": [0.1 * ms / (w[-1] - w[0]), 0.0]}
    layer.spec = CalibrationSpec(**{**layer.spec.__dict__, "cold": ("one", "log_tokens")})
    pred._cache.clear()
    return pred


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_predict_value_and_one_hot_expectation_agree_with_a_cold_term(cold_predictor, name):
    pred, space = cold_predictor, get_space(name, "tiny")
    cost = pred.cost_matrix(space, CTXS[0])
    assert cost.cold is not None
    heavier = 0
    for seed in range(12):
        arch = space.sample(100 + seed)
        idx = space.indices(arch)
        p = pred.predict(arch, CTXS[0])
        assert cost.value(idx) == pytest.approx(p, rel=1e-9)
        assert float(expected_latency(one_hot_weights(space, idx), cost)) == pytest.approx(p, rel=1e-9)
        heavier += cost.cold.at(cost.cold.weights.value(idx)) > 0
    assert 0 < heavier < 12


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_cold_term_gradient_and_extremes(cold_predictor, name):
    space = get_space(name, "tiny")
    cost = cold_predictor.cost_matrix(space, CTXS[0])
    g = torch.Generator().manual_seed(0)
    logits = {d.name: torch.randn(len(d.choices), generator=g, dtype=torch.float64).requires_grad_()
              for d in space.decisions()}
    keys = list(logits)

    def f(*ls):
        return expected_latency({k: torch.softmax(v, -1) for k, v in zip(keys, ls)}, cost)

    assert torch.autograd.gradcheck(f, tuple(logits[k] for k in keys), eps=1e-6, atol=1e-7, rtol=1e-5)
    (lo, lo_idx), (hi, hi_idx) = cost.extremes()
    values = [cost.value(space.indices(a)) for a in space.enumerate(limit=20000)]
    if space.size() <= 20000:
        assert lo == pytest.approx(min(values)) and hi == pytest.approx(max(values))
    assert cost.value(lo_idx) == pytest.approx(lo) and cost.value(hi_idx) == pytest.approx(hi)
    r_lo, r_hi = cost.range()
    assert r_lo <= min(values) + 1e-12 and max(values) - 1e-12 <= r_hi
    assert math.isfinite(lo) and lo < hi


def test_nasbert_selection_prices_the_cold_term(cold_predictor):
    from nas.nasbert.select import combine
    from nas.nasbert.supernet import block_layouts, path_of

    space = get_space("nasbert", "tiny")
    cost = cold_predictor.cost_matrix(space, CTXS[0])
    lays = block_layouts(space, 2, 6)
    rng = random.Random(0)
    survivors = [[{"path": list(path_of(space.indices(space.sample(rng)), lay)), "loss": rng.random()}
                  for _ in range(4)] for lay in lays]
    table, _ = combine(space, cost, lays, survivors, [3.0], top=2)
    from nas.arch import Architecture

    for _, row in itertools.islice(table.iterrows(), 16):
        arch = Architecture.from_json(row["arch_json"])
        assert row["predicted_latency_ms"] == pytest.approx(cost.value(space.indices(arch)), rel=1e-9)


def test_a_slope_that_would_be_clamped_is_not_chosen():
    """Heavy models measured faster than their ops add up to: a fitted slope below 0 would be clamped to 0 when
    predicting, so the fit may not lean on it."""
    layer = _fit(_rows(knee=8.0, slope=-0.01, n=30, seed=0))
    assert "cold" not in layer.coef["nasbert"]
