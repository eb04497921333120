"""nas.verify: a search's pick measured before training, and picked again with the predictor's reading divided out."""
from __future__ import annotations

import pytest

from latency.profile_data import read_profile, resolve_profile
from nas.verify import ACCEPT, land, profile_measurer

BUDGET = 10.0
CANDIDATES = [6.0, 7.0, 8.0, 8.6, 9.0, 9.4, 9.8, 10.4]  # predicted ms of the architectures a search can return


def budget_pick(calls: list[float]):
    """The search as the loop sees it: the largest candidate predicted (x scale) under 0.985 x budget."""

    def pick(scale: float):
        calls.append(scale)
        fit = [c for c in CANDIDATES if c * scale <= 0.985 * BUDGET]
        best = max(fit) if fit else min(CANDIDATES)
        return f"arch{best}", best

    return pick


def measured_as(factor: float):
    return lambda arch: factor * float(arch[4:])


def test_a_pick_within_the_window_is_kept_after_one_measurement():
    calls: list[float] = []
    got = land(budget_pick(calls), measured_as(1.0), BUDGET)
    assert got.landed and got.arch == "arch9.8" and got.measured_ms == 9.8 and calls == [1.0]
    assert len(got.tries) == 1 and got.tries[0]["kept"] and "pick timed here" in got.note(BUDGET)


def test_a_predictor_reading_low_is_divided_out_on_the_next_pick():
    calls: list[float] = []
    got = land(budget_pick(calls), measured_as(1.08), BUDGET)  # this machine runs every model 8 % slower
    assert calls == [1.0, pytest.approx(1.08)]
    assert got.landed and got.arch == "arch9.0"  # 9.0 x 1.08 = 9.72: the largest candidate measured under budget
    assert [t["kept"] for t in got.tries] == [False, True]
    assert got.tries[0]["share"] == pytest.approx(9.8 * 1.08 / BUDGET) and got.predicted_ms == 9.0


def test_a_predictor_reading_high_is_divided_out_too():
    got = land(budget_pick([]), measured_as(0.90), BUDGET)  # 9.8 -> 8.82: under the kept window
    assert got.landed and ACCEPT[0] * BUDGET <= got.measured_ms <= BUDGET and got.arch == "arch10.4"
    assert got.tries[0]["share"] == pytest.approx(0.882) and len(got.tries) == 2


def test_a_pick_that_repeats_ends_the_loop_and_the_closest_under_is_kept():
    seq = iter(["arch9.8", "arch8.0", "arch9.8", "arch7.0"])
    times = {"arch9.8": 11.0, "arch8.0": 8.5}  # over, then more than 10 % under; then the first pick again
    got = land(lambda s: (a := next(seq), float(a[4:])), times.__getitem__, BUDGET, tries=5)
    assert len(got.tries) == 2 and not got.landed
    assert got.arch == "arch8.0" and got.measured_ms == 8.5 and [t["kept"] for t in got.tries] == [False, True]


def test_every_pick_over_keeps_the_fastest_and_says_so():
    got = land(lambda s: ("arch9.8", 9.8) if s == 1.0 else ("arch9.0", 9.0), measured_as(1.5), BUDGET)
    assert not got.landed and got.arch == "arch9.0" and len(got.tries) == 2
    assert "kept the fastest (none was under)" in got.note(BUDGET) and [t["kept"] for t in got.tries] == [False, True]


@pytest.mark.parametrize("kw, what", [({"tries": 0}, "tries"), ({"budget_ms": 0.0}, "budget_ms")])
def test_bad_arguments_are_refused(kw, what):
    args = {"budget_ms": BUDGET, **kw}
    with pytest.raises(ValueError, match=what):
        land(budget_pick([]), measured_as(1.0), args.pop("budget_ms"), **args)


def _profile_here(meta_change):
    from latency.backends.base import get_backend
    from latency.device import fingerprint
    from latency.measure import quick_protocol
    from latency.stats import Protocol

    prof = read_profile(resolve_profile("intel-xeon-2c_ort-1.31_t1"), need_ops=False)
    with get_backend("onnxruntime", threads=1) as be:
        prof.meta = {**prof.meta, "device": fingerprint(1), "backend": be.info(),
                     "protocol": quick_protocol(Protocol()).to_dict()}
    meta_change(prof.meta)
    return prof


def test_the_measurer_times_a_pick_on_the_profiles_device():
    from nas.arch import Architecture
    from nas.spaces import Context

    prof = _profile_here(lambda m: None)
    edges = ("n0.in0", "n0.in1", "n1.in0", "n1.in1", "n1.n0", "n2.in0", "n2.in1", "n2.n0", "n2.n1")
    arch = Architecture.from_dict({"space": "adabert", "version": 1, "preset": "small",
                                   "choices": {"cells": 1, **dict.fromkeys(edges, "identity")}})
    measure, why = profile_measurer(prof, Context(1, 32), references=0)  # the time as measured
    assert why is None
    assert measure(arch) > 0
    measure, why = profile_measurer(prof, Context(1, 32), references=2, speed=1.05)  # beside two profile models
    ms, details = measure(arch)
    assert details["references"] == 2 and details["raw_ms"] > 0 and details["machine_speed"] > 0
    assert ms == pytest.approx(details["raw_ms"] / details["machine_speed"] * 1.05, rel=1e-4)  # at the carried speed


def test_the_measurer_declines_another_device():
    measure, why = profile_measurer(_profile_here(lambda m: m["device"].update(cores=999)), None)
    assert measure is None and "not the profile's device" in why


def _fake_measurer(monkeypatch, factor: float, predicted_of, calls: list):
    """nas.verify.profile_measurer replaced: every model runs ``factor`` x what the predictor says."""
    import nas.verify

    def measurer(prof, ctx, num_labels=2):
        def measure(arch):
            calls.append(arch.key)
            return factor * predicted_of(arch)
        return measure, None

    monkeypatch.setattr(nas.verify, "profile_measurer", measurer)


def test_nasbert_choices_are_timed_and_chosen_again_and_a_resume_measures_nothing(monkeypatch, tmp_path):
    import json

    import pandas as pd

    from nas.configs import NasBertConfig
    from nas.nasbert.run import _verify_choices
    from nas.nasbert.select import choose
    from nas.spaces import Context, get_space

    space = get_space("nasbert", "tiny")
    archs = [space.sample(seed=s) for s in range(8)]
    table = pd.DataFrame({"arch_json": [a.key for a in archs], "predicted_latency_ms": CANDIDATES,
                          "quality_estimate": [-c for c in CANDIDATES]})  # slower candidates estimated better
    predicted = dict(zip(table["arch_json"], table["predicted_latency_ms"]))
    cfg = NasBertConfig()
    choices, table = choose(table, [BUDGET, 100.0], cfg.top_per_budget, lambda a: 0.0, (0.935, 0.985))
    assert table.at[choices[0].row, "predicted_latency_ms"] == 9.4  # the best estimate within the window
    calls: list[str] = []
    _fake_measurer(monkeypatch, 1.08, lambda a: predicted[a.key], calls)
    kept, table, rec = _verify_choices(tmp_path, table, choices, cfg, lambda a: 0.0, (0.935, 0.985), None,
                                       Context(1, 128), 3)
    assert table.at[kept[0].row, "predicted_latency_ms"] == 9.0 and rec["10"]["landed"]  # 9.0 x 1.08 = 9.72 ms
    assert table.at[kept[0].row, "chosen_for_budget_ms"] == "10" and table.at[choices[0].row, "chosen_for_budget_ms"] == ""
    assert rec["100"]["landed"] is False and len(calls) == 3  # 100 ms: even the slowest candidate (11.2 ms) runs far under it
    saved = json.loads((tmp_path / "verify.json").read_text())
    assert saved["10"]["arch"] == archs[CANDIDATES.index(9.0)].to_dict() and len(saved["10"]["tries"]) == 2
    calls.clear()
    again, _, _ = _verify_choices(tmp_path, table, choices, cfg, lambda a: 0.0, (0.935, 0.985), None,
                                  Context(1, 128), 3)
    assert [c.row for c in again] == [c.row for c in kept] and calls == []  # taken from verify.json


def test_an_adabert_pick_is_timed_before_training_and_refitted_and_a_resume_measures_nothing(monkeypatch, tmp_path):
    import json

    import torch

    from latency.predictor import load_predictor
    from nas.adabert.derive import derive, fit_to_budget
    from nas.adabert.run import _verify
    from nas.spaces import Context, get_space

    space = get_space("adabert", "small")
    ctx = Context(1, 128)
    cost = load_predictor(resolve_profile("intel-xeon-2c_ort-1.31_t1")).cost_matrix(space, ctx)
    torch.manual_seed(0)
    probs = {d.name: torch.softmax(torch.randn(len(d.choices)), 0) for d in space.decisions()}
    argmax = derive(space, probs)
    budget, window = 2.0, (0.935, 0.985)
    first = fit_to_budget(space, probs, argmax, cost, window[0] * budget, window[1] * budget)
    calls: list[str] = []
    _fake_measurer(monkeypatch, 1.12, lambda a: cost.value(space.indices(a)), calls)
    arch, moves, rec = _verify(tmp_path, space, probs, argmax, cost, cost, window, budget, None, ctx, 2, 3, first)
    assert cost.value(space.indices(first[0])) * 1.12 > budget  # the first pick, as measured, is over
    assert rec["landed"] and arch != first[0] and ACCEPT[0] * budget <= 1.12 * cost.value(space.indices(arch)) <= budget
    assert len(rec["tries"]) == 2 and rec["tries"][1]["scale"] == pytest.approx(1.12)
    assert moves == fit_to_budget(space, probs, argmax, cost, window[0] * budget / 1.12, window[1] * budget / 1.12)[1]
    assert json.loads((tmp_path / "verify.json").read_text())["arch"] == arch.to_dict()
    calls.clear()
    again = _verify(tmp_path, space, probs, argmax, cost, cost, window, budget, None, ctx, 2, 3, first)
    assert again[0] == arch and calls == []
    other = fit_to_budget(space, probs, argmax, cost, 0.5 * budget, 0.6 * budget)  # weights searched again, say
    assert other[0] != first[0]
    _verify(tmp_path, space, probs, argmax, cost, cost, window, budget, None, ctx, 2, 3, other)
    assert calls  # another first pick: measured afresh


def test_the_printed_report_shows_each_pick_and_the_one_kept():
    from nas.engine_cli import verify_lines

    got = land(budget_pick([]), measured_as(1.08), BUDGET)
    lines = verify_lines({"verify": got.to_dict(BUDGET)})
    assert lines[0].strip().startswith("pick timed here: 9.720 ms = 0.972 x the 10.000 ms budget (pick 2")
    assert "measured 10.584 ms = 1.058 x budget" in lines[1] and lines[2].endswith("<- kept") and len(lines) == 3
    assert verify_lines({"verify": None}) == [] and verify_lines({}) == []


def test_a_pick_timed_beside_references_is_judged_at_the_predictors_speed_and_the_report_says_so():
    """The machine runs 8 % slow in these minutes and the predictor reads the pick right: the references say so, and
    the first pick is kept (the loop before them re-picked it smaller, chasing the drift)."""
    from nas.engine_cli import verify_lines

    def measure(arch):  # what profile_measurer returns with references: (ms at the predictor's speed, details)
        raw = float(arch[4:]) * 1.08
        return raw / 1.08, {"raw_ms": raw, "machine_speed": 1.08, "references": 6}

    calls: list[float] = []
    got = land(budget_pick(calls), measure, BUDGET)
    assert got.landed and got.arch == "arch9.8" and calls == [1.0] and got.tries[0]["raw_ms"] == pytest.approx(10.584)
    note = got.note(BUDGET)
    assert note.startswith("pick timed here: 9.800 ms = 0.980 x the 10.000 ms budget at the predictor's speed")
    assert "raw 10.584 ms; the machine ran 1.080 x its profile, by 6 of the profile's models" in note
    lines = verify_lines({"verify": got.to_dict(BUDGET)})
    assert "(raw 10.584 ms, machine x 1.080)  <- kept" in lines[1]
