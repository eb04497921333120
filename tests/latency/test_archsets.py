"""Latency-only search helpers: the greedy budget fill is a local optimum within its budget, and uses it."""
import pytest

from latency.archsets import capacity_model, fill_budget, full_indices, latency_search
from latency.loss import build_cost_model
from nas.spaces import Context, get_space
from nas.spaces.ops import get_op

CTX = Context(2, 16)


def _cost(space):
    """A made-up latency: FLOPs at CTX plus a constant per op run (not proportional to parameters)."""
    return build_cost_model(space, lambda s: 1e-6 * float(get_op(s.kind).flops(s, CTX)) + 0.01, 2)


@pytest.mark.parametrize("name", ["adabert", "nasbert"])
def test_fill_budget_is_a_local_optimum_within_the_budget(name):
    space = get_space(name, "tiny")
    cost, cap = _cost(space), capacity_model(space)
    (lo, lo_idx), (hi, _) = cost.extremes()
    for frac in (0.2, 0.5, 0.8):
        budget = lo + frac * (hi - lo)
        start = full_indices(space, lo_idx)
        got = fill_budget(space, cost, cap, start, budget)
        assert cost.value(got) <= budget and cap.value(got) >= cap.value(start)
        short = cost.value(got) < 0.95 * budget
        for d in space.decisions():  # no single change adds capacity and stays within the budget
            for c in range(len(d.choices)):
                trial = {**got, d.name: c}
                assert not (cap.value(trial) > cap.value(got) + 1e-9 and cost.value(trial) <= budget), (d.name, c)
                # under 0.95 x the budget: neither does one that keeps the capacity and uses more of the budget
                assert not (short and cap.value(trial) >= cap.value(got) - 1e-9
                            and cost.value(got) < cost.value(trial) <= budget), (d.name, c)
    over = full_indices(space, cost.extremes()[1][1])  # already over the budget: returned as it is
    assert fill_budget(space, cost, cap, over, lo) == over


def test_latency_search_stays_within_its_budget():
    space = get_space("nasbert", "tiny")
    cost, cap = _cost(space), capacity_model(space)
    (lo, _), (hi, _) = cost.extremes()
    for frac in (0.1, 0.6):
        budget = lo + frac * (hi - lo)
        idx, pred, runs = latency_search(space, cost, cap, budget, max_rounds=3)
        assert pred == pytest.approx(cost.value(full_indices(space, idx))) and pred <= budget * 0.985 + 1e-9
        assert runs >= 1
