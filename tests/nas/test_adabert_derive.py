"""nas.adabert.derive: AdaBERT's derivation rule, the greedy fit into the budget window on the shipped predictor,
and the two-sided ``window`` budget penalty of latency.loss."""
from __future__ import annotations

import pytest
import torch

from latency.loss import PENALTIES, WINDOW_LO, BudgetPenalty
from latency.predictor import load_predictor
from latency.profile_data import resolve_profile
from nas.adabert.derive import derive, fit_to_budget, log_prob, op_distribution
from nas.adabert.search import Efficiency
from nas.configs import PENALTY_NAMES
from nas.spaces import Context, get_space
from nas.spaces.adabert import NODES, edge_names

PROFILE = "intel-xeon-2c_ort-1.31_t1"


@pytest.fixture(scope="module")
def space():
    return get_space("adabert", "small")


@pytest.fixture(scope="module")
def cost(space):
    """The shipped predictor's latency cost model of the small preset at batch 1, seq_len 128."""
    return load_predictor(resolve_profile(PROFILE)).cost_matrix(space, Context(1, 128))


def random_probs(space, seed: int, concentration: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for d in space.decisions():
        x = (-torch.log(torch.rand(len(d.choices), generator=g))) ** (1 / concentration)  # peaked, positive
        out[d.name] = x / x.sum()
    return out


# --------------------------------------------------------------------------------------------- derive
@pytest.mark.parametrize("seed", range(6))
def test_derive_keeps_the_two_strongest_nonzero_edges_per_node(space, seed):
    probs = random_probs(space, seed)
    ops = list(space.preset.ops)
    nonzero = [i for i, t in enumerate(ops) if t != "zero"]
    arch = derive(space, probs)
    assert arch.choices["cells"] == space.decision("cells").choices[int(probs["cells"].argmax())]
    for j in range(NODES):
        incoming = [n for n, jj, _ in edge_names() if jj == j]
        assert len(incoming) == j + 2  # node 0 has exactly 2 candidates: it keeps both
        kept = [n for n in incoming if arch.choices[n] != "zero"]
        assert len(kept) == 2
        strength = {n: max(float(probs[n][i]) for i in nonzero) for n in incoming}
        assert min(strength[n] for n in kept) >= max((strength[n] for n in incoming if n not in kept), default=0)
        for n in kept:
            best = max(nonzero, key=lambda i: float(probs[n][i]))
            assert arch.choices[n] == ops[best]
    space.indices(arch)  # a valid architecture of the space


def test_derive_never_picks_zero_even_when_zero_is_most_likely(space):
    ops = list(space.preset.ops)
    z = ops.index("zero")
    probs = {}
    for d in space.decisions():
        p = torch.full((len(d.choices),), 0.01)
        if d.name != "cells":
            p[z] = 0.9
            p[ops.index("maxpool:k=3")] = 0.05
        else:
            p[2] = 0.9
        probs[d.name] = p / p.sum()
    arch = derive(space, probs)
    assert arch.choices["cells"] == 3
    for j in range(NODES):
        chosen = [arch.choices[n] for n, jj, _ in edge_names() if jj == j]
        assert sorted(chosen, key=lambda t: t != "zero")[-2:] == ["maxpool:k=3"] * 2
        assert chosen.count("zero") == j  # every edge but 2 per node is dropped


# ------------------------------------------------------------------------------------------- fit_to_budget
def _check_moves(space, cost, arch, fitted, moves):
    v = cost.value(space.indices(arch))
    for m in moves:
        assert m["from"] == pytest.approx(v)
        v = m["to"]
    assert cost.value(space.indices(fitted)) == pytest.approx(v)


@pytest.mark.parametrize("share", [0.05, 0.15, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_lands_in_the_window(space, cost, share, seed):
    (fastest, _), (slowest, _) = cost.extremes()
    budget = fastest / 0.935 + share * (slowest - fastest / 0.935)
    lo, hi = 0.935 * budget, 0.985 * budget
    probs = random_probs(space, seed)
    arch = derive(space, probs)
    fitted, moves = fit_to_budget(space, probs, arch, cost, lo, hi)
    v = cost.value(space.indices(fitted))
    if not lo <= v <= hi:  # the tightest budgets: the kept edges may leave no way into the window
        assert v < lo, (budget, cost.value(space.indices(arch)), moves)  # never over the budget
        ups = [cost.value(space.indices(fitted.__class__(fitted.space, fitted.version, fitted.preset,
                                                         {**fitted.choices, n: t})))
               for n, c in fitted.choices.items() if n != "cells" and c != "zero" for t in space.preset.ops
               if t != "zero"]
        assert not any(lo <= u <= hi for u in ups)  # and no single op change would land in it
        assert share == 0.05  # only at the tightest budget of this grid (intel-xeon t1 predictor, 2026-11-24)
    _check_moves(space, cost, arch, fitted, moves)
    # only the ops of the kept edges and K move: the same edges stay active, so the log-probability cannot rise
    assert {n for n, c in fitted.choices.items() if c == "zero"} == {n for n, c in arch.choices.items() if c == "zero"}
    assert log_prob(space, probs, fitted) <= log_prob(space, probs, arch) + 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_fit_over_budget_only_lowers_latency(space, cost, seed):
    probs = random_probs(space, seed)
    ramp = torch.linspace(0.5, 1.0, space.preset.max_cells)
    probs["cells"] = ramp / ramp.sum()  # K_max most likely: a slow start
    arch = derive(space, probs)
    v0 = cost.value(space.indices(arch))
    (fastest, _), _ = cost.extremes()
    budget = max(fastest / 0.935 * 1.01, 0.7 * v0)
    assert v0 > 0.985 * budget
    fitted, moves = fit_to_budget(space, probs, arch, cost, 0.935 * budget, 0.985 * budget)
    assert moves and moves[0]["to"] < moves[0]["from"]
    assert cost.value(space.indices(fitted)) < v0
    over = [m for m in moves if m["from"] > 0.985 * budget]
    assert all(m["to"] < m["from"] for m in over)
    _check_moves(space, cost, arch, fitted, moves)


def test_fit_leaves_an_in_window_architecture_alone(space, cost):
    probs = random_probs(space, 7)
    arch = derive(space, probs)
    v = cost.value(space.indices(arch))
    fitted, moves = fit_to_budget(space, probs, arch, cost, 0.99 * v, 1.01 * v)
    assert fitted == arch and moves == []


# ------------------------------------------------------------------------------------------- op_distribution
def test_op_distribution_sums_to_one(space):
    for seed in range(3):
        dist = op_distribution(space, random_probs(space, seed))
        kinds = {k: v for k, v in dist.items() if k.startswith("p_")}
        assert set(kinds) == {"p_conv", "p_avgpool", "p_maxpool", "p_identity", "p_zero"}
        assert sum(kinds.values()) == pytest.approx(1.0)
        assert 1 <= dist["expected_cells"] <= space.preset.max_cells
    uniform = {d.name: torch.full((len(d.choices),), 1 / len(d.choices)) for d in space.decisions()}
    dist = op_distribution(space, uniform)
    assert dist["p_conv"] == pytest.approx(0.6) and dist["p_zero"] == pytest.approx(0.1)
    assert dist["expected_cells"] == pytest.approx(4.5)


# ------------------------------------------------------------------------------------------- window penalty
def test_window_penalty_is_zero_inside_and_pushes_back_outside():
    budget = 2.0
    p = BudgetPenalty("window", budget)
    for e in (WINDOW_LO * budget, 1.9, budget):
        assert float(p(0.0, torch.tensor(e, dtype=torch.float64))) == 0.0
    for e, sign in ((2.6, 1.0), (1.0, -1.0)):  # above: d/dE > 0 (descent lowers E); below: d/dE < 0
        x = torch.tensor(e, dtype=torch.float64, requires_grad=True)
        loss = p(torch.tensor(0.3), x)
        loss.backward()
        assert float(loss.detach()) > 0.3
        assert float(x.grad) == pytest.approx(sign / budget)
    assert float(p(0.0, torch.tensor(2.6, dtype=torch.float64))) == pytest.approx(0.3)
    assert float(p(0.0, torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(WINDOW_LO - 0.5)


def test_penalty_names_of_the_cli_exist_in_latency_loss():
    assert set(PENALTY_NAMES) <= set(PENALTIES)


def test_efficiency_descent_lands_expected_latency_in_the_window(space, cost):
    (fastest, _), (slowest, _) = cost.extremes()
    budget = fastest + 0.3 * (slowest - fastest)
    eff = Efficiency(cost, budget, "window", beta=4.0)
    logits = {d.name: torch.zeros(len(d.choices), requires_grad=True) for d in space.decisions()}
    opt = torch.optim.Adam(logits.values(), lr=0.05)
    for _ in range(300):
        loss, e = eff(torch.zeros(()), {k: torch.softmax(v, -1) for k, v in logits.items()})
        if float(loss.detach()) == 0.0:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert WINDOW_LO * budget <= float(e.detach()) <= budget
    # without a budget: the paper's normalised proxy, beta * E / max
    plain = Efficiency(cost, None, "window", beta=4.0)
    probs = {k: torch.softmax(v.detach(), -1) for k, v in logits.items()}
    loss, e = plain(torch.tensor(1.0), probs)
    assert float(loss) == pytest.approx(1.0 + 4.0 * float(e) / slowest, rel=1e-5)
