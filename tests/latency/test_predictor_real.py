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


def test_measure_against_a_profile_reports_its_prediction_and_warns_when_far_off(real_tiny_profile, tmp_path, capsys):
    """``hwnas measure --profile`` sets the measurement beside the profile's prediction; a model running far from
    it (another CPU under the same name) gets a warning naming the fix. Without a predictor: a note, no figure."""
    import shutil

    from latency.profile_cli import _against_profile

    folder = tmp_path / "prof"
    shutil.copytree(real_tiny_profile, folder)
    (folder / "predictor.json").unlink(missing_ok=True)  # `hwnas profile` fits one; first, a profile without
    arch = get_space("nasbert", "tiny").sample(seed=1)
    ctx = Context(1, 32)
    none = _against_profile(str(folder), arch, ctx, 1.0)
    assert none["predicted_latency_ms"] is None and "hwnas fit" in none["predictor_note"]
    assert main(["fit", str(folder), "--json"]) == 0
    capsys.readouterr()
    predicted = _against_profile(str(folder), arch, ctx, 1.0)["predicted_latency_ms"]
    assert predicted > 0
    alike = _against_profile(str(folder), arch, ctx, 1.1 * predicted)
    assert alike["measured_vs_predicted"] == pytest.approx(1.1) and alike["speed_warning"] is None
    off = _against_profile(str(folder), arch, ctx, 0.5 * predicted)
    assert off["measured_vs_predicted"] == pytest.approx(0.5)
    assert "0.50x" in off["speed_warning"] and f"--transfer-from {folder}" in off["speed_warning"]

    arch.save(tmp_path / "a.json")
    assert main(["measure", str(tmp_path / "a.json"), "--profile", str(folder), "--batch", "1", "--seq-len", "32",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["predicted_latency_ms"] == pytest.approx(predicted)
    assert r["measured_vs_predicted"] == pytest.approx(r["latency_p50_ms"] / predicted)


def test_recheck_measures_the_profiles_rows_and_applies_a_speed_factor(real_tiny_profile, tmp_path, capsys):
    """``hwnas recheck`` re-measures test rows with the profile's protocol; ``--apply`` writes the factor into
    ``predictor.json`` and every prediction follows it; a refit drops it; a factor far from 1 is refused."""
    import shutil

    from latency.measure import recheck
    from latency.profile_data import read_profile

    prof_dir = tmp_path / "p"
    shutil.copytree(real_tiny_profile, prof_dir)
    assert main(["fit", str(prof_dir)]) == 0
    arch = get_space("adabert", "tiny").sample(3)
    before = load_predictor(prof_dir).predict(arch, Context(1, 32))
    capsys.readouterr()
    assert main(["recheck", str(prof_dir), "--rows", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["applied"] is False and out["factor"] == pytest.approx(
        1 + out["median_signed_diff_pct"] / 100)
    assert out["unsteady"] == (out["factor_se_pct"] > 1.5)
    assert 0.5 < out["probe_vs_reference"] < 2 and 0.5 < out["factor_at_reference"] < 2  # a profile with a probe
    assert load_predictor(prof_dir).speed == 1.0  # without --apply nothing is written
    assert main(["recheck", str(prof_dir), "--rows", "3", "--apply", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pred = load_predictor(prof_dir)
    assert out["applied"] and pred.speed == pytest.approx(out["factor"], abs=1e-5)
    assert pred.predict(arch, Context(1, 32)) == pytest.approx(before * pred.speed, rel=1e-9)
    r = recheck(read_profile(prof_dir), 2, seed=1)
    assert r["n"] == 2 and len(r["rows"]) == 2 and all(a > 0 and b > 0 for a, b in r["rows"])
    assert main(["fit", str(prof_dir)]) == 0 and load_predictor(prof_dir).speed == 1.0
    assert 0 <= r["rows_faulting"] <= 2


def test_recheck_warns_when_rows_page_fault(real_tiny_profile, tmp_path, capsys, monkeypatch):
    """Rows whose runs page-faulted say so: their time is the allocator's as much as the machine's speed."""
    import shutil

    import latency.measure as lm

    prof_dir = tmp_path / "p"
    shutil.copytree(real_tiny_profile, prof_dir)
    assert main(["fit", str(prof_dir)]) == 0
    monkeypatch.setattr(lm, "recheck", lambda prof, n, seed: {
        "n": 4, "median_signed_diff_pct": 3.0, "median_abs_diff_pct": 3.0, "p90_abs_diff_pct": 5.0,
        "max_abs_diff_pct": 6.0, "factor": 1.03, "factor_se_pct": 0.0, "unsteady": False, "rows_faulting": 2,
        "rows": [(1.0, 1.03)] * 4})
    capsys.readouterr()
    assert main(["recheck", str(prof_dir), "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 of the 4 rows took at least 256 page faults per run" in out
    monkeypatch.setattr(lm, "recheck", lambda prof, n, seed: {
        "n": 4, "median_signed_diff_pct": 3.0, "median_abs_diff_pct": 3.0, "p90_abs_diff_pct": 5.0,
        "max_abs_diff_pct": 6.0, "factor": 1.03, "factor_se_pct": 0.0, "unsteady": False, "rows_faulting": 0,
        "rows": [(1.0, 1.03)] * 4})
    assert main(["recheck", str(prof_dir), "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert "page faults" not in out and "warning" not in out


def test_recheck_warns_when_the_rows_disagree_on_the_speed(real_tiny_profile, tmp_path, capsys, monkeypatch):
    """Rows that read the machine at very different speeds (it moved while they ran) make the factor uncertain:
    the line says so, with the factor's standard error."""
    import shutil

    import latency.measure as lm

    prof_dir = tmp_path / "p"
    shutil.copytree(real_tiny_profile, prof_dir)
    assert main(["fit", str(prof_dir)]) == 0
    rows = [(1.0, v) for v in (1.00, 1.12, 0.95, 1.20, 1.04)]
    se = lm.factor_se([b / a for a, b in rows])
    assert se > lm.UNSTEADY_SE
    monkeypatch.setattr(lm, "recheck", lambda prof, n, seed: {
        "n": 5, "median_signed_diff_pct": 4.0, "median_abs_diff_pct": 4.0, "p90_abs_diff_pct": 20.0,
        "max_abs_diff_pct": 20.0, "factor": 1.04, "factor_se_pct": 100 * se, "unsteady": True, "rows_faulting": 0,
        "rows": rows})
    capsys.readouterr()
    assert main(["recheck", str(prof_dir), "--rows", "5"]) == 0
    out = capsys.readouterr().out
    assert f"the factor's standard error {100 * se:.1f} %" in out
    assert "warning: the rows disagree on this machine's speed" in out and "recheck in a few minutes" in out


def test_recheck_bad_input_is_one_line(real_tiny_profile, tmp_path, capsys):
    import shutil

    prof_dir = tmp_path / "p"
    shutil.copytree(real_tiny_profile, prof_dir)
    (prof_dir / "predictor.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["recheck", str(prof_dir), "--rows", "2"]) == 2  # no predictor: nothing is measured
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hwnas fit" in err[0]
    assert main(["fit", str(prof_dir)]) == 0
    capsys.readouterr()
    assert main(["recheck", str(prof_dir), "--rows", "0"]) == 2
    assert "--rows must be at least 1" in capsys.readouterr().err
