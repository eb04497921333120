"""A new device in minutes (``hwnas profile --transfer-from``): the source's op table scaled by per-op ratios
measured at the grid's corners (and middles), calibrated on a few whole models; its refusals and its resume."""
import json

import numpy as np
import pytest

from latency.evaluate import evaluate
from latency.measure import quick_protocol
from latency.profile_data import PredictorError, read_profile
from latency.profiler import ProfileConfig, run_profile
from latency.stats import Protocol
from latency.transfer import _bilinear, check_source, fit_transfer, scaled_ops
from nas.cli import main
from nas.spaces import Context, get_space

CORNERS = {"batch": [1, 4], "seq_len": [16, 64]}
CORNER_CTXS = [Context(b, s) for b in CORNERS["batch"] for s in CORNERS["seq_len"]]


def _ratio(kind: str) -> float:
    return {"mha": 2.0, "ffn": 1.5}.get(kind, 1.2)


def test_scaled_ops_moves_each_op_by_its_own_ratio(tmp_path, profile_maker):
    make_profile = profile_maker
    src = read_profile(make_profile(tmp_path / "src"))
    new = read_profile(make_profile(tmp_path / "new", grid=CORNERS, e2e_ctxs=CORNER_CTXS))
    new.ops["latency_p50_ms"] = [ms * _ratio(k) * float(src.ops.set_index(["op_key", "batch", "seq_len"]).loc[
        (key, b, s), "latency_p50_ms"]) / ms for key, k, b, s, ms in zip(new.ops["op_key"], new.ops["kind"],
                                                                      new.ops["batch"], new.ops["seq_len"],
                                                                      new.ops["latency_p50_ms"])]
    out = scaled_ops(src, new)
    assert len(out) == len(src.ops) and set(out["seq_len"]) == {16, 32, 64}  # the source's whole grid
    ratio = out["latency_p50_ms"].to_numpy() / src.ops["latency_p50_ms"].to_numpy()
    np.testing.assert_allclose(ratio, [_ratio(k) for k in src.ops["kind"]], rtol=1e-9)


def test_scaled_ops_fill_what_a_measuring_budget_skipped_from_the_kind(tmp_path, profile_maker):
    """An op measured at some Contexts only takes its kind's median ratio at the others; an op never measured takes
    it everywhere; a kind missing at a Context takes every op's median there. Measured Contexts stay exact."""
    src = read_profile(profile_maker(tmp_path / "src"))
    new = read_profile(profile_maker(tmp_path / "new", grid=CORNERS, e2e_ctxs=CORNER_CTXS))
    src_ms = src.ops.set_index(["op_key", "batch", "seq_len"])["latency_p50_ms"]
    new.ops["latency_p50_ms"] = [src_ms[(key, b, s)] * _ratio(k) for key, k, b, s in
                                 zip(new.ops["op_key"], new.ops["kind"], new.ops["batch"], new.ops["seq_len"])]
    mha = new.ops[new.ops["kind"] == "mha"]["op_key"].unique()
    partial, gone = mha[0], mha[1]
    drop = (((new.ops["op_key"] == partial) & (new.ops["batch"] == 4)) | (new.ops["op_key"] == gone)
            | ((new.ops["kind"] == "ffn") & (new.ops["batch"] == 1) & (new.ops["seq_len"] == 16)))
    new.ops = new.ops[~drop].reset_index(drop=True)
    out = scaled_ops(src, new).set_index(["op_key", "batch", "seq_len"])["latency_p50_ms"]
    ratio = out / src_ms
    assert np.isfinite(ratio).all() and len(ratio) == len(src.ops)
    for key in (partial, gone):  # the other mha ops all read 2.0: the kind's median fills in
        np.testing.assert_allclose(ratio.xs(key, level="op_key"), 2.0, rtol=1e-9)
    ffn = src.ops[src.ops["kind"] == "ffn"]["op_key"].iloc[0]
    assert ratio[(ffn, 1, 16)] == pytest.approx(1.2)  # no ffn there: every op's median at (1, 16) (most read 1.2)
    assert ratio[(ffn, 4, 64)] == pytest.approx(1.5)  # measured: exact


def test_scaled_ops_bend_between_corners_along_the_kinds_size_curve(tmp_path, profile_maker):
    """A ratio that follows the op's size (a quadratic in log source ms per kind: small ops dearer, as torch's
    per-call overhead makes them) is recovered between the corners, where bilinear corner interpolation misses it;
    the corners stay exact."""
    import math

    src = read_profile(profile_maker(tmp_path / "src"))
    new = read_profile(profile_maker(tmp_path / "new", grid=CORNERS, e2e_ctxs=CORNER_CTXS))
    src_ms = src.ops.set_index(["op_key", "batch", "seq_len"])["latency_p50_ms"]

    def log_ratio(kind: str, ms: float) -> float:
        x = math.log(ms)
        return {"mha": 0.3 - 0.2 * x + 0.05 * x * x, "ffn": 0.1 + 0.08 * x * x}.get(kind, 0.2)

    new.ops["latency_p50_ms"] = [src_ms[(key, b, s)] * math.exp(log_ratio(k, src_ms[(key, b, s)])) for key, k, b, s
                                 in zip(new.ops["op_key"], new.ops["kind"], new.ops["batch"], new.ops["seq_len"])]
    out = scaled_ops(src, new)
    want = [ms * math.exp(log_ratio(k, ms)) for k, ms in zip(src.ops["kind"], src.ops["latency_p50_ms"])]
    np.testing.assert_allclose(out["latency_p50_ms"].to_numpy(), want, rtol=1e-6)
    corner_only = [ms * math.exp(_bilinear({(b, t): log_ratio(k, src_ms[(key, b, t)]) for b in CORNERS["batch"]
                                            for t in CORNERS["seq_len"]}, [1, 4], [16, 64], bb, ss))
                   for key, k, bb, ss, ms in zip(src.ops["op_key"], src.ops["kind"], src.ops["batch"],
                                                 src.ops["seq_len"], src.ops["latency_p50_ms"])]
    assert np.max(np.abs(np.array(corner_only) / np.array(want) - 1)) > 0.005  # what the bend recovers


def test_transfer_predicts_the_new_device_from_its_corners(tmp_path, profile_maker):
    """The new device is 1.7x slower with its own noise; only the corners of the grid are measured there."""
    make_profile = profile_maker
    src = read_profile(make_profile(tmp_path / "src"))
    new = read_profile(make_profile(tmp_path / "new", seed=1, scale=1.7, grid=CORNERS, e2e_ctxs=CORNER_CTXS,
                                    device="synthetic-cpu-2"))
    pred = fit_transfer(src, new, "lut+calibration")
    assert pred.kind == "lut+calibration+transfer" and pred.grid == {"batch": [1, 4], "seq_len": [16, 32, 64]}
    for space, r in evaluate(pred, new).items():  # the new device's held-out whole models
        assert r["all"]["within_10_pct"] >= 0.9, (space, r["all"])
    spec = get_space("nasbert", "tiny").unique_ops()[0]
    src_ms = src.ops.set_index(["op_key", "batch", "seq_len"]).loc[(spec.key, 4, 32), "latency_p50_ms"]
    assert pred.base_ms([spec], Context(4, 32))[0] == pytest.approx(1.7 * src_ms, rel=0.05)  # an interior point
    with pytest.raises(PredictorError, match="'\\+calibration' kind"):
        fit_transfer(src, new, "lut")


def test_a_source_that_cannot_transfer_is_refused(tmp_path, profile_maker):
    src = profile_maker(tmp_path / "src")
    meta = json.loads((src / "profile.json").read_text())
    for edit, match in (
        (lambda m: m["spaces"][0].update(version=99), "space version 99, this hwnas has version 1"),
        (lambda m: m["backend"].update(device="cuda"), "a cuda profile and the new device is cpu"),
        (lambda m: m.update(transfer_from={"name": "other"}), "itself a transfer profile"),
    ):
        m = json.loads(json.dumps(meta))
        edit(m)
        (src / "profile.json").write_text(json.dumps(m))
        with pytest.raises(PredictorError, match=match):
            check_source(read_profile(src), "cpu")


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """A real measured tiny profile (3 batch sizes x 2 seq_lens) to transfer from."""
    out = tmp_path_factory.mktemp("src") / "tiny"
    cfg = ProfileConfig(spaces=(("adabert", "tiny"), ("nasbert", "tiny")), batch=(1, 2, 4), seq_len=(16, 32), e2e=2,
                        protocol=quick_protocol(Protocol()), quick=True, search_like=False)
    run_profile(cfg, out)
    return out


def test_transfer_cli_measures_corners_fits_resumes_and_refits(tiny_source, tmp_path, capsys):
    new = tmp_path / "new"
    argv = ["profile", "--transfer-from", str(tiny_source), "--out", str(new), "--e2e", "1", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["predictor"]["kind"].endswith("+transfer") and r["predictor"]["source"] == "tiny"
    prof = read_profile(new)
    # ops at the ends and the middle of each axis: batch 1, 2, 4 (seq_len 16, 32 has no other middle)
    assert {(int(b), int(s)) for b, s in zip(prof.ops["batch"], prof.ops["seq_len"])} == {
        (b, s) for b in (1, 2, 4) for s in (16, 32)}
    assert set(prof.e2e["split"]) == {"calibration"} and prof.meta["transfer_from"]["name"] == "tiny"
    # whole models: both seq_len ends at the smallest and at the middle batch
    assert {(int(b), int(s)) for b, s in zip(prof.e2e["batch"], prof.e2e["seq_len"])} == {(1, 16), (1, 32), (2, 16),
                                                                                            (2, 32)}
    saved = json.loads((new / "predictor.json").read_text())
    layer = saved["layers"][-1]  # four Contexts: alpha bent by the product of log batch and log seq_len
    assert layer["alpha_basis"] == ["one", "log_batch", "log_seq_len", "log_batch_x_seq_len"]
    assert saved["grid"] == {"batch": [1, 2, 4], "seq_len": [16, 32]}  # the source's grid
    # the same command again: nothing measured, the predictor refitted the same way
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["visits_measured_now"] == 0
    assert main(argv[:-1]) == 0  # as text: the budget line too
    assert "measuring budget 170.0 s: 0 visits skipped, 0 rows from fewer visits" in capsys.readouterr().out
    assert main(["fit", str(new), "--json"]) == 0  # `hwnas fit` on a transfer profile goes back to its source
    assert json.loads(capsys.readouterr().out)["predictor"].endswith("+transfer")
    arch = tmp_path / "a.json"
    assert main(["sample", "--space", "nasbert", "--preset", "tiny", "--seed", "1", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["predict", str(new), str(arch), "--batch", "2", "--seq-len", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0
    # bad input: one line each
    for extra, match in ((["--batch", "1"], "drop --batch"), (["--quick"], "drop --quick"),
                         (["--minutes", "1.5"], "--minutes 1.5 is too short")):
        assert main([*argv[:-1], *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert main(["profile", "--transfer-from", str(new), "--out", str(tmp_path / "again")]) == 2
    assert "itself a transfer profile" in capsys.readouterr().err
    assert main(["profile", "--out", str(tmp_path / "full"), "--minutes", "3"]) == 2
    assert "--minutes bounds a --transfer-from measurement" in capsys.readouterr().err
    # a transfer folder of the design before (whole models at three Contexts) is not resumed as this design: one line
    meta = json.loads((new / "profile.json").read_text())
    meta["e2e"]["contexts"] = meta["e2e"]["contexts"][:3]
    (new / "profile.json").write_text(json.dumps(meta))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "e2e.contexts" in err and "--force-new" in err and len(err.strip().splitlines()) == 1


def test_transfer_spec_bends_alpha_only_where_the_contexts_span_the_product():
    import pandas as pd

    from latency.profile_data import ProfileData
    from latency.transfer import TRANSFER_SPEC, TRANSFER_SPEC_PLANE, e2e_contexts, transfer_spec

    def prof(ctxs):
        e2e = pd.DataFrame({"batch": [b for b, _ in ctxs], "seq_len": [s for _, s in ctxs]})
        return ProfileData("x", {}, None, e2e)

    four = e2e_contexts([1, 8, 32], [32, 64, 128, 256])
    assert transfer_spec(prof(four)) is TRANSFER_SPEC
    # an earlier transfer's three Contexts: the product is a multiple of log batch there, so no product term
    assert transfer_spec(prof(four[:3])) is TRANSFER_SPEC_PLANE
