"""Predictors on a real (quick, tiny) profile measured once per session with ``hwnas profile --quick``."""
from __future__ import annotations

import json

import pytest

from latency.loss import expected_latency, one_hot_weights
from latency.predictor import DEFAULT_KIND, KINDS, fit, load_predictor
from nas.cli import main
from nas.spaces import Context, get_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def real_tiny_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "tiny_quick"
    rc = main(["profile", "--quick", "--preset", "tiny", "--space", "adabert,nasbert", "--e2e", "4",
               "--out", str(out), "--json"])
    assert rc == 0
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_one_hot_equals_predict_on_measured_numbers(real_tiny_profile, kind):
    pred = fit(real_tiny_profile, kind)
    for name in ("adabert", "nasbert"):
        space = get_space(name, "tiny")
        for ctx in (Context(1, 32), Context(2, 64)):  # a grid Context and an interpolated one
            cost = pred.cost_matrix(space, ctx)
            for seed in range(4):
                arch = space.sample(seed)
                e = float(expected_latency(one_hot_weights(space, space.indices(arch)), cost))
                assert e == pytest.approx(pred.predict(arch, ctx), rel=1e-12)
                assert e > 0


def test_cli_on_a_real_profile(real_tiny_profile, tmp_path, capsys):
    capsys.readouterr()
    assert main(["fit", str(real_tiny_profile), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictor"] == DEFAULT_KIND
    arch = get_space("nasbert", "tiny").sample(7).save(tmp_path / "a.json")
    assert main(["predict", str(real_tiny_profile), str(arch), "--batch", "1", "--seq-len", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] > 0 and out["predictor"] == DEFAULT_KIND and out["warnings"] == []
    assert main(["evaluate-predictor", str(real_tiny_profile), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert res["lut"]["nasbert"]["all"]["n"] > 0
    refit = fit(real_tiny_profile).to_dict()
    assert json.dumps(refit, sort_keys=True) == json.dumps(load_predictor(real_tiny_profile).to_dict(), sort_keys=True)
