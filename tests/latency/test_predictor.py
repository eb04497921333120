"""Predictors: files, refits, interpolation, calibration, few-shot transfer, CLI and bad input."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

import latency.predictor as pred_mod
from latency.evaluate import evaluate
from latency.predictor import KINDS, fit, load_predictor, predictor_from_dict
from latency.profile_data import PredictorError, read_profile
from latency.transfer import transfer
from nas.arch import Architecture
from nas.cli import main
from nas.spaces import Context, OpSpec, get_space

CTX = Context(1, 32)


@pytest.fixture(scope="module")
def predictors(synth_profile):
    return {k: fit(synth_profile, k) for k in KINDS}


def _archs(n: int = 5):
    return [get_space(name, "tiny").sample(seed) for name in ("adabert", "nasbert") for seed in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_predictions(predictors, kind, tmp_path):
    pred = predictors[kind]
    path = pred.save(tmp_path / "predictor.json")
    text = path.read_text()
    assert "pickle" not in text and json.loads(text)["schema"] == "hwnas.predictor/1"
    back = load_predictor(path)
    for arch in _archs():
        for ctx in (CTX, Context(2, 40)):
            assert back.predict(arch, ctx) == pred.predict(arch, ctx)


@pytest.mark.parametrize("kind", KINDS)
def test_refit_from_the_same_csv_gives_the_same_json(synth_profile, predictors, kind):
    again = fit(synth_profile, kind)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(predictors[kind].to_dict(), sort_keys=True)


def test_saved_file_names_its_schema_and_versions(predictors):
    d = predictors["regression+calibration"].to_dict()
    assert {"hwnas", "numpy", "scikit-learn", "python"} <= set(d["versions"])
    assert "kind=conv" in d["feature_schema"]["feature_names"] and d["feature_schema"]["layers"]
    assert {s["name"] for s in d["spaces"]} == {"adabert", "nasbert"}


def test_calibration_beats_the_plain_table(synth_profile, predictors):
    prof = read_profile(synth_profile)
    for base in ("lut", "regression"):
        plain = evaluate(predictors[base], prof)
        cal = evaluate(predictors[base + "+calibration"], prof)
        for space in ("adabert", "nasbert"):
            assert cal[space]["all"]["mape_pct"] < plain[space]["all"]["mape_pct"] / 3
            assert cal[space]["all"]["within_10_pct"] == 1.0


def test_table_interpolates_between_grid_contexts(predictors):
    pred = predictors["lut"]
    arch = get_space("nasbert", "tiny").sample(0)
    lo, mid, hi = (pred.predict(arch, Context(1, s)) for s in (32, 48, 64))
    assert lo < mid < hi
    assert pred.check_context(Context(1, 48), pred.space("nasbert")) == []


def test_regression_covers_widths_the_table_lacks(predictors):
    reg, lut = predictors["regression"], predictors["lut"]
    small, big = OpSpec.parse("ffn:inner=64|h=32"), OpSpec.parse("ffn:inner=64|h=48")  # h=48 never measured
    with pytest.raises(PredictorError, match="not in the profile's table"):
        lut.op_costs("nasbert", [big], CTX)
    a, b = reg.op_costs("nasbert", [small, big], CTX)
    assert 0 < a < b


def test_calibration_uses_only_the_calibration_split(synth_profile, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(synth_profile, folder)
    e2e = pd.read_csv(folder / "e2e.csv")
    e2e.loc[e2e["split"] == "test", "latency_p50_ms"] *= 50  # poison the test rows
    e2e.to_csv(folder / "e2e.csv", index=False)
    assert json.dumps(fit(folder, "lut+calibration").body()) == json.dumps(fit(synth_profile, "lut+calibration").body())


def test_few_shot_transfer_from_twenty_rows(predictors, synth_profile_fast):
    new = read_profile(synth_profile_fast)
    src = predictors["lut+calibration"]
    adapted = transfer(src, new, shots=20)
    assert adapted.kind == "lut+calibration+transfer" and adapted.meta["shots"] == 20
    res = evaluate(adapted, new)
    before = evaluate(src.__class__(src.kind, src.base, src.layers, spaces=src.spaces, grid=src.grid,
                                    profile=src.profile), new)
    for space in ("adabert", "nasbert"):
        assert res[space]["all"]["within_10_pct"] >= 0.9
        assert res[space]["all"]["mape_pct"] < before[space]["all"]["mape_pct"] / 4


def test_warns_outside_the_grid_and_refuses_far_outside(predictors, caplog):
    pred, arch = predictors["lut+calibration"], get_space("adabert", "tiny").sample(0)
    with caplog.at_level("WARNING"):
        ms = pred.predict(arch, Context(6, 32))  # batch grid is 1..4
    assert ms > 0 and "outside the profile's measured batch" in caplog.text
    with pytest.raises(PredictorError, match="far outside.*seq_len"):
        pred.predict(arch, Context(1, 6))  # seq_len grid starts at 16
    with pytest.raises(PredictorError, match="far outside.*batch"):
        pred.predict(arch, Context(16, 32))
    with pytest.raises(PredictorError, match="position embeddings"):
        pred.predict(arch, Context(1, 200))  # tiny presets stop at 128


def test_space_and_version_mismatches_are_errors(synth_profile, predictors, tmp_path):
    folder = tmp_path / "only_adabert"
    shutil.copytree(synth_profile, folder)
    meta = json.loads((folder / "profile.json").read_text())
    meta["spaces"] = [s for s in meta["spaces"] if s["name"] == "adabert"]
    (folder / "profile.json").write_text(json.dumps(meta))
    e2e = pd.read_csv(folder / "e2e.csv")
    e2e[e2e["space"] == "adabert"].to_csv(folder / "e2e.csv", index=False)
    pred = fit(folder, "lut+calibration")
    with pytest.raises(PredictorError, match="does not cover space 'nasbert'.*hwnas profile --space nasbert"):
        pred.predict(get_space("nasbert", "tiny").sample(0), CTX)
    small = Architecture.from_dict(get_space("adabert", "small").sample(0).to_dict())
    with pytest.raises(PredictorError, match="preset 'tiny', not 'small'"):
        pred.predict(small, CTX)
    d = json.loads(json.dumps(predictors["lut"].to_dict()))  # a copy: to_dict shares the predictor's own lists
    d["spaces"][0]["version"] = 99
    with pytest.raises(PredictorError, match="version 99.*refit"):
        predictor_from_dict(d)
    with pytest.raises(PredictorError, match="not an hwnas predictor"):
        predictor_from_dict({"schema": "other/1"})


def test_predictor_of_another_profile_is_refused(synth_profile, synth_profile_fast, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(synth_profile_fast, folder)
    fit(synth_profile, "lut").save(folder / "predictor.json")
    with pytest.raises(PredictorError, match="another device"):
        load_predictor(folder)


def test_corrupt_profile_and_unknown_kind_are_errors(synth_profile, tmp_path):
    with pytest.raises(PredictorError, match="not a profile folder"):
        read_profile(tmp_path)
    folder = tmp_path / "bad"
    shutil.copytree(synth_profile, folder)
    pd.read_csv(folder / "ops.csv").drop(columns=["flops"]).to_csv(folder / "ops.csv", index=False)
    with pytest.raises(PredictorError, match="ops.csv"):
        read_profile(folder)
    with pytest.raises(PredictorError, match="unknown predictor kind 'xgb'"):
        fit(synth_profile, "xgb")
    ops = pd.read_csv(synth_profile / "ops.csv")
    ops.iloc[3:].to_csv(folder / "ops.csv", index=False)  # one op loses grid points
    with pytest.raises(PredictorError, match="incomplete"):
        fit(folder, "lut")


def test_cli_fit_predict_evaluate(synth_profile, synth_profile_fast, tmp_path, capsys):
    folder = tmp_path / "cli"
    shutil.copytree(synth_profile, folder)
    arch = get_space("nasbert", "tiny").sample(3)
    arch_path = arch.save(tmp_path / "arch.json")
    assert main(["fit", str(folder), "--kind", "lut+calibration", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictor"] == "lut+calibration" and (folder / "predictor.json").is_file()
    assert out["under_q90"] == {s: load_predictor(folder).under_q90(s) for s in ("adabert", "nasbert")}
    assert main(["predict", str(folder), str(arch_path), "--batch", "2", "--seq-len", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"latency_ms", "predictor", "batch", "seq_len", "warnings"}
    assert out["latency_ms"] == pytest.approx(load_predictor(folder).predict(arch, Context(2, 40)))
    assert out["under_q90"] == load_predictor(folder).under_q90("nasbert") is not None
    assert out["warnings"] == []
    assert main(["predict", str(folder), str(arch_path), "--batch", "6", "--json"]) == 0  # seq 128: outside
    assert len(json.loads(capsys.readouterr().out)["warnings"]) == 2
    plot = tmp_path / "plot.png"
    assert main(["evaluate-predictor", str(folder), "--plot", str(plot), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert plot.stat().st_size > 1000
    assert set(out["results"]) == {*KINDS, "saved (lut+calibration)"}
    ctx_stats = next(iter(out["results"]["lut"]["nasbert"]["contexts"].values()))
    assert {"within_5_pct", "within_10_pct", "mape_pct", "rmse_ms", "spearman", "spearman_flops",
            "spearman_params"} <= set(ctx_stats)
    new = tmp_path / "new"
    shutil.copytree(synth_profile_fast, new)
    (new / "ops.csv").unlink()  # few-shot needs no op table
    assert main(["fit", str(new), "--from", str(folder), "--e2e-only", "--shots", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictor"] == "lut+calibration+transfer" and out["shots"] == 12
    assert main(["evaluate-predictor", str(new), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["results"]) == ["saved (lut+calibration+transfer)"]


def test_cli_errors_are_one_line_with_status_2(synth_profile, tmp_path, capsys):
    arch_path = get_space("adabert", "tiny").sample(0).save(tmp_path / "a.json")
    assert main(["predict", str(synth_profile), str(arch_path), "--seq-len", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error:") and err.count("\n") == 1
    assert main(["fit", str(tmp_path), "--kind", "lut"]) == 2
    assert "not a profile folder" in capsys.readouterr().err
    assert main(["fit", str(synth_profile), "--e2e-only"]) == 2
    assert "--from" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["lut+calibration", "regression+calibration"])
def test_calibrated_costs_are_never_negative_and_models_take_time(predictors, kind):
    pred = predictors[kind]
    for name in ("adabert", "nasbert"):
        space = pred.space(name)
        for b in (1, 4):
            for s in (16, 24, 64):
                cost = pred.cost_matrix(space, Context(b, s))
                assert all(float(c.min()) >= 0 for _, c in cost.terms)
                assert cost.extremes()[0][0] > 0


def test_calibration_layer_is_plain_json_with_its_form(predictors):
    layer = predictors["lut+calibration"].to_dict()["layers"][0]
    assert layer["alpha_basis"] == ["one", "hat"] and layer["grid"] == [[1, 4], [16, 32, 64]]
    assert set(layer["coef"]) == {"adabert", "nasbert"}
    for c in layer["coef"].values():
        assert len(c["alpha"]) == 1 + 6 and c["rows"] > 0 and c["ridge"] is not None


@pytest.mark.parametrize("kind", ["lut+calibration", "regression+calibration"])
def test_an_identity_layer_costs_nothing_once_calibrated(predictors, kind):
    """An identity op is no node of an exported model (its table entry times the harness alone): calibrated, it
    costs 0, so a NAS-BERT layer turned empty saves its op's whole cost; a layer fitted before ``free_kinds``
    existed keeps the calibrated identity cost it was fitted with."""
    pred = predictors[kind]
    space = pred.space("nasbert")
    ids = [s for s in space.unique_ops() if s.kind == "identity"]
    assert ids and (pred.op_costs("nasbert", ids, CTX) == 0).all()
    assert (pred.base_ms(ids, CTX) > 0).all()  # the table does time the harness
    d = pred.to_dict()
    assert all(layer["free_kinds"] == ["identity"] for layer in d["layers"])
    for layer in d["layers"]:
        del layer["free_kinds"]
    old = predictor_from_dict(json.loads(json.dumps(d)))
    assert old.layers[0].spec.free == ()


def test_predictor_older_than_the_tables_is_refused(synth_profile, tmp_path):
    folder = tmp_path / "stale"
    shutil.copytree(synth_profile, folder)
    fit(folder, "lut").save(folder / "predictor.json")
    assert load_predictor(folder).kind == "lut"
    e2e = pd.read_csv(folder / "e2e.csv")
    e2e.iloc[:-1].to_csv(folder / "e2e.csv", index=False)  # the profile changed after the fit
    with pytest.raises(PredictorError, match="before .* tables last changed; refit"):
        load_predictor(folder)


def test_evaluate_plot_never_lands_in_a_shipped_profile(tmp_path, monkeypatch):
    from latency.predictor_cli import _default_plot
    from latency.table import shipped_root

    monkeypatch.chdir(tmp_path)
    assert _default_plot(shipped_root() / "intel-xeon-2c_ort-1.31_t1") == tmp_path / "intel-xeon-2c_ort-1.31_t1_predictor.png"
    assert _default_plot(tmp_path / "mine") == tmp_path / "mine" / "predictor.png"


def test_auto_takes_per_space_the_calibrated_kind_that_cross_validates_better(synth_profile, predictors):
    auto = predictors["auto+calibration"]
    why = auto.meta["base_choice"]
    assert set(auto.base.choice) == {"adabert", "nasbert"} == set(why)
    for space, w in why.items():
        lut, reg = w["cv_error_lut"], w["cv_error_regression"]
        assert w["base"] == ("lut" if lut < (1 - pred_mod.TABLE_MARGIN) * reg else "regression")
        assert lut == predictors["lut+calibration"].layers[-1].coef[space]["cv_error"]
        assert reg == predictors["regression+calibration"].layers[-1].coef[space]["cv_error"]
    for arch in _archs():  # each space predicts exactly as the kind it took
        chosen = predictors[f"{auto.base.choice[arch.space]}+calibration"]
        for ctx in (CTX, Context(2, 40)):
            assert auto.predict(arch, ctx) == chosen.predict(arch, ctx)
    d = auto.to_dict()["base"]  # only the bases some space uses are stored
    assert d["type"] == "per_space" and set(d) - {"type", "choice"} == set(auto.base.choice.values())


def test_held_out_residuals_are_those_of_the_fit_without_the_architecture():
    import numpy as np

    from latency.calibration import HUBER, _cv_ridge, _ridge

    rng = np.random.default_rng(0)
    groups = [f"a{i // 4}" for i in range(20)]  # 5 architectures x 4 Contexts: leave one out
    xs = rng.normal(size=(20, 3))
    r = xs @ np.array([0.05, -0.02, 0.01]) + rng.normal(scale=0.03, size=20)
    r[3] += 0.4  # one disturbed row
    lam, err, held = _cv_ridge(xs, r, groups)
    g = np.array(groups)
    for name in sorted(set(groups)):
        delta = _ridge(xs[g != name], r[g != name], lam)
        assert np.allclose(held[g == name], r[g == name] - xs[g == name] @ delta)
    res = np.abs(held)
    assert err == pytest.approx(np.where(res <= HUBER, res**2 / 2, HUBER * (res - HUBER / 2)).sum())
    assert _cv_ridge(xs, r, ["one"] * 20)[2].size == 0  # nothing to hold out


@pytest.mark.parametrize("kind", KINDS)
def test_calibrated_predictors_record_how_low_they_read_and_searches_aim_by_it(predictors, kind):
    p = predictors[kind]
    back = predictor_from_dict(json.loads(json.dumps(p.to_dict())))
    for space in ("adabert", "nasbert"):
        q = p.under_q90(space)
        assert back.under_q90(space) == q  # saved with the layer
        if not kind.endswith("+calibration"):
            assert q is None and p.aimed_window(space, (0.935, 0.985)) == (0.935, 0.985)
            continue
        assert q == p.layers[-1].coef[space]["cv_under_q90"] and -1 < q < 1
        lo, hi = p.aimed_window(space, (0.935, 0.985))
        assert hi == pytest.approx(min(0.985, 1 - min(q, pred_mod.MAX_MARGIN))) and hi - lo == pytest.approx(0.05)


def test_auto_keeps_the_regression_on_a_tie_and_the_table_when_clearly_better(synth_profile, monkeypatch):
    prof = read_profile(synth_profile)
    monkeypatch.setattr(pred_mod, "TABLE_MARGIN", 1.0)  # the table would need a negative error
    assert set(fit(prof, "auto+calibration").base.choice.values()) == {"regression"}
    monkeypatch.setattr(pred_mod, "TABLE_MARGIN", -100.0)  # the table wins unless 100x worse
    auto = fit(prof, "auto+calibration")
    assert set(auto.base.choice.values()) == {"lut"} and set(auto.to_dict()["base"]) == {"type", "choice", "lut"}
    with pytest.raises(PredictorError, match="far outside"):  # a table space extrapolates 2x, not 4x
        auto.predict(_archs(1)[0], Context(3 * max(auto.grid["batch"]), 32))
    n = min(w["calibration_archs"] for w in auto.meta["base_choice"].values())
    monkeypatch.setattr(pred_mod, "AUTO_MIN_ARCHS", n + 1)  # too few architectures to choose by: the regression
    assert set(fit(prof, "auto+calibration").base.choice.values()) == {"regression"}


def test_auto_extrapolates_per_space_as_far_as_its_base_allows(predictors, monkeypatch):
    auto = predictors["auto+calibration"]
    base = pred_mod.PerSpaceBase({"adabert": "lut", "nasbert": "regression"},
                                 {"lut": predictors["lut"].base, "regression": predictors["regression"].base})
    mixed = pred_mod.OpPredictor(auto.kind, base, auto.layers, spaces=auto.spaces, grid=auto.grid,
                                 profile=auto.profile, meta=auto.meta)
    far = Context(3 * max(auto.grid["batch"]), 32)  # 3x beyond the grid: within 4x, beyond 2x
    ada, nas = _archs(1)
    with pytest.raises(PredictorError, match="far outside"):
        mixed.predict(ada, far)
    assert mixed.predict(nas, far) > 0


def test_malformed_per_space_base_is_one_line(predictors, tmp_path):
    d = predictors["auto+calibration"].to_dict()
    d["base"]["choice"]["nasbert"] = "forest"
    with pytest.raises(PredictorError, match="per-space base names.*forest.*refit"):
        predictor_from_dict(d)
    d = predictors["auto+calibration"].to_dict()
    del d["base"][d["base"]["choice"]["adabert"]]
    with pytest.raises(PredictorError, match="refit"):
        predictor_from_dict(d)


def test_a_speed_factor_scales_predictions_and_cost_tensors_and_survives_a_save(predictors, tmp_path):
    from latency.loss import expected_latency, one_hot_weights

    pred = predictor_from_dict(predictors["auto+calibration"].to_dict())
    archs = _archs(3)
    before = [pred.predict(a, CTX) for a in archs]
    pred.set_speed({"factor": 1.07, "n": 16, "median_abs_diff_pct": 7.0}, "2026-12-05T06:30:00+00:00")
    for a, b in zip(archs, before):
        assert pred.predict(a, CTX) == pytest.approx(1.07 * b, rel=1e-12)
        space = pred.space(a.space)
        e = float(expected_latency(one_hot_weights(space, space.indices(a)), pred.cost_matrix(space, CTX)))
        assert e == pytest.approx(pred.predict(a, CTX), rel=1e-12)
    back = load_predictor(pred.save(tmp_path / "predictor.json"))
    assert back.speed == 1.07 and back.predict(archs[0], CTX) == pred.predict(archs[0], CTX)
    d = pred.to_dict()
    d["meta"]["speed"]["factor"] = 1.5  # not drift: another machine
    with pytest.raises(PredictorError, match="speed factor 1.5.*recheck"):
        predictor_from_dict(d)
    d["meta"]["speed"] = "fast"  # hand-edited into something else: one line too
    with pytest.raises(PredictorError, match="speed factor 'fast'.*recheck"):
        predictor_from_dict(d)


def test_few_shot_transfer_drops_the_sources_speed_factor(predictors, synth_profile_fast):
    src = predictor_from_dict(predictors["lut+calibration"].to_dict())
    src.set_speed({"factor": 1.1, "n": 16}, "2026-12-05T06:30:00+00:00")
    assert transfer(src, read_profile(synth_profile_fast), shots=20).speed == 1.0


def test_levels_take_out_the_per_context_bias_a_strong_ridge_leaves():
    """A Context whose whole models all run 8 % above the sum of their ops: with the ridge forcing the layer to
    near the identity, the level of that Context carries the 8 %; the others stay at 1; a Context measured on too
    few architectures keeps 1; and a saved layer predicts the same."""
    import dataclasses
    from collections import Counter

    from latency.calibration import FULL, LEVEL_MIN_ARCHS, Calibration, Row, fit_calibration

    grid = ((1, 8), (32, 64))
    spec = dataclasses.replace(FULL, ridge=10.0, grid=grid, harness=(), kind_scale=False, cold=(), knees=())
    ops = [OpSpec.make("ffn", 64, inner=128), OpSpec.make("mha", 64, heads=2, head_dim=32)]

    def prev_ops(space, specs, ctx):
        return [0.01 * ctx.batch * ctx.seq_len / 32 * (2 if s.kind == "mha" else 1) for s in specs]

    rows = []
    for a in range(8):
        bag = Counter({ops[0]: 1 + a % 3, ops[1]: 1 + a // 3})
        for b, q in [(b, q) for b in grid[0] for q in grid[1]]:
            if (b, q) == (1, 32) and a >= LEVEL_MIN_ARCHS - 1:
                continue  # too few architectures at b1 s32
            ctx = Context(b, q)
            total = sum(n * m for n, m in zip(bag.values(), prev_ops("s", list(bag), ctx)))
            rows.append(Row("s", ctx, bag, total * (1.08 if (b, q) == (8, 64) else 1.0), f"a{a}"))
    layer = fit_calibration(rows, lambda sp, specs, ctx: prev_ops(sp, specs, ctx), lambda sp, ctx, w: 0.0, spec)
    assert layer.level("s", Context(8, 64)) / layer.level("s", Context(1, 64)) == pytest.approx(1.08, rel=0.02)
    assert layer.level("s", Context(1, 32)) == 1.0  # fewer than LEVEL_MIN_ARCHS architectures there
    for r in rows:  # every row within 1.5 % once levelled (the layer itself stays near the identity)
        pred = layer.apply_ops("s", list(r.bag), prev_ops("s", list(r.bag), r.ctx), r.ctx) @ list(r.bag.values())
        assert pred == pytest.approx(r.measured_ms, rel=0.015), (r.ctx, r.group)
    again = Calibration.from_dict(json.loads(json.dumps(layer.to_dict())))
    assert again.level("s", Context(8, 64)) == layer.level("s", Context(8, 64))
    broken = json.loads(json.dumps(layer.to_dict()))
    broken["coef"]["s"]["level"] = [1.0, 1.0]  # two values for a 2 x 2 grid
    with pytest.raises(PredictorError, match="malformed per-Context level of space 's'.*hwnas fit"):
        Calibration.from_dict(broken)
    assert again.level("s", Context(4, 64)) == pytest.approx((layer.level("s", Context(1, 64)) +  # 2/3 of the way
                                                              2 * layer.level("s", Context(8, 64))) / 3)  # in log batch
