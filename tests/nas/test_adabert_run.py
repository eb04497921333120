"""nas.adabert.run end to end on a real (1-layer) teacher and the shipped profile: the run folder, the report, the
budget window, refusals before any training, and a killed run that resumes to the uninterrupted result."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latency.predictor import load_predictor
from latency.profile_data import resolve_profile
from nas.adabert.derive import derive, fit_to_budget
from nas.adabert.run import RunError, run_adabert
from nas.arch import Architecture
from nas.configs import SearchConfig
from nas.data import batches, encode, load_task
from nas.spaces import Context, get_space

pytestmark = pytest.mark.slow

PROFILE = "intel-xeon-2c_ort-1.31_t1"
BUDGET_MS = 2.0
CFG = {"epochs": 1, "retrain_epochs": 1, "batch_size": 16, "max_len": 32, "log_every": 1}
CTX = Context(1, 128)
REPORT_FIELDS = ("teacher_accuracy", "student_accuracy", "params", "flops", "budget_ms", "predicted_latency_ms",
                 "measured_latency_ms", "speedup_vs_teacher", "speedup_vs_bert_base", "budget_met", "search_minutes",
                 "retrain_minutes")


@pytest.fixture(scope="module")
def space():
    return get_space("adabert", "small")


@pytest.fixture(scope="module")
def lat_cost(space):
    return load_predictor(resolve_profile(PROFILE)).cost_matrix(space, CTX)


@pytest.fixture(scope="module")
def run(demo_teacher, demo_small, tmp_path_factory):
    """One search + retraining at 2 ms on the demo subset, not measured: (run folder, report)."""
    out = tmp_path_factory.mktemp("run") / "two_ms"
    report = run_adabert(demo_small, demo_teacher.path, PROFILE, BUDGET_MS, out, config=SearchConfig(**CFG),
                         measure=False)
    return out, report


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------- the run folder
def test_run_folder_files(run, demo_teacher):
    out, _ = run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "arch.json", "arch_weights.json", "history.csv", "retrain.csv", "report.json", "model",
            "model.onnx"} <= names
    assert not names & {"search.pt", "retrain.pt"}  # checkpoints are removed once their stage is done
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= {p.name for p in (out / "model").iterdir()}
    cfg = read_json(out / "config.json")
    assert cfg["budget_ms"] == BUDGET_MS and cfg["preset"] == "small" and cfg["profile_name"] == PROFILE
    assert cfg["search"] == dataclasses.asdict(SearchConfig(**CFG))
    assert cfg["teacher"] == str(demo_teacher.path.resolve()) and (cfg["batch"], cfg["seq_len"]) == (1, 128)


def test_history_csv(run, space):
    out, _ = run
    hist = pd.read_csv(out / "history.csv")
    kinds = ["p_conv", "p_avgpool", "p_maxpool", "p_identity", "p_zero"]
    for col in kinds + ["expected_cells", "expected_cost", "tau", "ce", "kd", "loss_w", "loss_a", "eff",
                        "sampled_cells", "epoch", "step", "epoch_end"]:
        assert col in hist.columns, col
    steps = -(-(48 - round(48 * 0.1)) // 16)  # the architecture's 10 % held out, batches of 16
    assert len(hist) == steps and list(hist["step"]) == list(range(steps))  # log_every=1: every step
    assert list(hist["epoch_end"]) == [False] * (steps - 1) + [True]
    assert np.allclose(hist[kinds].sum(axis=1), 1.0)
    cfg = SearchConfig(**CFG)
    assert np.allclose(hist["tau"], [cfg.tau(i / steps) for i in range(steps)])
    assert hist["expected_cost"].gt(0).all() and hist["sampled_cells"].between(1, space.preset.max_cells).all()
    retrain = pd.read_csv(out / "retrain.csv")
    assert list(retrain.columns) == ["epoch", "train_loss", "dev_accuracy"] and len(retrain) == 1


def test_arch_is_the_fitted_derivation_of_the_searched_weights(run, space, lat_cost):
    out, report = run
    probs = {k: torch.tensor(v) for k, v in read_json(out / "arch_weights.json")["probabilities"].items()}
    assert set(probs) == {d.name for d in space.decisions()}
    assert all(abs(float(p.sum()) - 1) < 1e-5 and p.shape == (len(space.decision(n).choices),)
               for n, p in probs.items())
    argmax = derive(space, probs)
    assert report["argmax_arch"] == argmax.to_dict()
    pred = load_predictor(resolve_profile(PROFILE))
    lo, hi = pred.aimed_window("adabert", (0.935, 0.985))  # the window moved down by the predictor's own error
    assert report["aimed_window"] == [lo, hi] and report["predictor_under_q90"] == pred.under_q90("adabert")
    assert hi == pytest.approx(min(0.985, 1 - pred.under_q90("adabert"))) and hi - lo == pytest.approx(0.05)
    fitted, moves = fit_to_budget(space, probs, argmax, lat_cost, lo * BUDGET_MS, hi * BUDGET_MS)
    arch = Architecture.load(out / "arch.json")
    assert arch == fitted and report["budget_moves"] == moves
    assert report["predicted_latency_ms"] == pytest.approx(lat_cost.value(space.indices(arch)))
    assert lo * BUDGET_MS <= report["predicted_latency_ms"] <= hi * BUDGET_MS


def test_report_fields(run, demo_teacher, demo_small, space):
    out, report = run
    assert read_json(out / "report.json") == json.loads(json.dumps(report, default=str))
    for key in set(REPORT_FIELDS) - {"speedup_vs_teacher", "speedup_vs_bert_base"}:
        assert key in report, key
    assert report["teacher_accuracy"] == demo_teacher.info["teacher_accuracy"]
    assert 0.0 <= report["student_accuracy"] <= 1.0
    arch = Architecture.load(out / "arch.json")
    assert report["params"] == space.params(arch, 5) and report["flops"] == space.flops(arch, CTX, 5) > 0
    assert report["budget_ms"] == BUDGET_MS and report["efficiency"] == "latency" and report["preset"] == "small"
    assert report["measured_latency_ms"] is None and report["budget_met"] is None and "not measured" in \
        report["measure_note"]
    assert report["search_minutes"] > 0 and report["retrain_minutes"] > 0
    assert report["fastest_ms"] <= report["predicted_latency_ms"] <= report["slowest_ms"]
    assert (report["train_examples"], report["dev_examples"]) == (len(demo_small.train), len(demo_small.dev))


def test_unmeasured_report_has_every_field(run):
    _, report = run
    assert all(key in report for key in REPORT_FIELDS)
    assert report["speedup_vs_teacher"] is None and report["speedup_vs_bert_base"] is None


def test_saved_model_and_onnx_agree_and_give_the_reported_accuracy(run, demo_small):
    from transformers import AutoTokenizer

    from nas.export import ort_session
    from nas.modeling import load_pretrained
    from nas.train import accuracy, predict_logits

    out, report = run
    model, arch, config = load_pretrained(out / "model")
    assert arch == Architecture.load(out / "arch.json") and config.num_labels == 5 and config.pair is False
    assert config.card["budget_ms"] == BUDGET_MS and config.card["dev_accuracy"] == report["student_accuracy"]
    enc = encode(AutoTokenizer.from_pretrained(out / "model"), demo_small.dev, max_len=32)
    logits, labels = predict_logits(model, batches(enc, 128))
    assert accuracy(logits, labels) == report["student_accuracy"]  # the saved model is the one that was scored
    sess = ort_session(out / "model.onnx")
    names = [i.name for i in sess.get_inputs()]
    assert names == ["input_ids", "attention_mask"]
    b = next(batches(enc, 16))
    got = sess.run(None, {n: b[n].numpy() for n in names})[0]
    with torch.no_grad():
        want = model(b["input_ids"], b["attention_mask"]).numpy()
    assert np.abs(got - want).max() < 1e-4 and (got.argmax(-1) == want.argmax(-1)).all()


# ------------------------------------------------------------------------------------------------- refusals
def test_infeasible_budget_is_refused_before_training(demo_teacher, demo_small, lat_cost, tmp_path):
    (fastest, _), _ = lat_cost.extremes()
    assert 0.01 < fastest
    with pytest.raises(RunError, match=rf"below the fastest adabert/small .*raise --budget-ms to at least "
                                       rf"{re.escape(f'{fastest:.3f}')}"):
        run_adabert(demo_small, demo_teacher.path, PROFILE, 0.01, tmp_path / "r", config=SearchConfig(**CFG),
                    measure=False)
    with pytest.raises(RunError, match="must be positive"):
        run_adabert(demo_small, demo_teacher.path, PROFILE, -1.0, tmp_path / "r", config=SearchConfig(**CFG))
    with pytest.raises(RunError, match="--budget-ms is required"):
        run_adabert(demo_small, demo_teacher.path, PROFILE, None, tmp_path / "r", config=SearchConfig(**CFG))
    assert not (tmp_path / "r").exists()


def test_teacher_of_another_task_is_refused(demo_teacher, tmp_path):
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\n")
    task = load_task(train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"), text_column="text",
                     label_column="label")
    with pytest.raises(RunError, match="trained for 5 labels .*the task has 2 .*build a teacher on this task"):
        run_adabert(task, demo_teacher.path, PROFILE, BUDGET_MS, tmp_path / "r", config=SearchConfig(**CFG))
    assert not (tmp_path / "r").exists()


def test_a_folder_of_another_run_is_refused(run, demo_teacher, demo_small, tmp_path):
    out, _ = run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(RunError, match=r"holds another run \(different budget_ms\); choose another --out"):
        run_adabert(demo_small, demo_teacher.path, PROFILE, 2.5, out, config=SearchConfig(**CFG), measure=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not an hwnas run folder"):
        run_adabert(demo_small, demo_teacher.path, PROFILE, BUDGET_MS, tmp_path / "busy", config=SearchConfig(**CFG))


def test_a_trained_run_keeps_its_architecture_when_the_derivation_would_change(run, demo_teacher, demo_small, space,
                                                                               tmp_path, caplog):
    out, first = run
    copy = tmp_path / "trained"
    shutil.copytree(out, copy)
    trained = Architecture.load(out / "arch.json")
    other = next(a for a in (space.sample(seed) for seed in range(20)) if a != trained)
    other.save(copy / "arch.json")  # as if an older predictor had derived this one, and the model was trained on it
    rep = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(json.dumps({**rep, "budget_moves": [{"move": "older"}]}))
    with caplog.at_level("WARNING", logger="nas.adabert.run"):
        again = run_adabert(demo_small, demo_teacher.path, PROFILE, BUDGET_MS, copy, config=SearchConfig(**CFG),
                            measure=False)
    assert Architecture.load(copy / "arch.json") == other and again["budget_moves"] == [{"move": "older"}]
    assert again["student_accuracy"] == first["student_accuracy"] and "kept the trained one" in caplog.text


def test_verify_times_the_pick_before_retraining_and_trains_the_one_kept(run, demo_teacher, demo_small, space, lat_cost,
                                                                          tmp_path, monkeypatch):
    """--verify on the searched weights of the run (its search kept, the rest redone): the pick timed by a stand-in
    for this machine (1.12 x the predictor), fitted again, and the model trained, saved and reported is the one kept."""
    import nas.adabert.measure
    import nas.verify
    from nas.modeling import load_config

    out, _ = run
    copy = tmp_path / "verified"
    shutil.copytree(out, copy)
    for name in ("retrain.json", "arch.json", "report.json", "model.onnx"):
        (copy / name).unlink()
    shutil.rmtree(copy / "model")
    calls = []

    def measurer(prof, ctx, num_labels=2):
        return (lambda arch: calls.append(arch) or 1.12 * lat_cost.value(space.indices(arch))), None

    monkeypatch.setattr(nas.verify, "profile_measurer", measurer)
    monkeypatch.setattr(nas.adabert.measure, "measure_report", lambda out, prof, ctx, teacher, predicted: {
        "measured_latency_ms": 1.0, "speedup_vs_teacher": 1.0, "speedup_vs_bert_base": 1.0, "budget_met": None,
        "measure_note": "stand-in", "measure_protocol": "stand-in"})
    report = run_adabert(demo_small, demo_teacher.path, PROFILE, BUDGET_MS, copy, config=SearchConfig(**CFG),
                         measure=True, verify=2)
    v = report["verify"]
    kept = Architecture.load(copy / "arch.json")
    assert v["arch"] == kept.to_dict() == json.loads((copy / "verify.json").read_text())["arch"] and calls
    assert report["predicted_latency_ms"] == pytest.approx(v["predicted_ms"]) and v["tries"][-1]["kept"] == v["landed"]
    assert v["tries"][0]["share"] == pytest.approx(1.12 * v["tries"][0]["predicted_ms"] / BUDGET_MS)
    if v["tries"][0]["share"] > 1.0:  # timed over: fitted again, smaller
        assert len(v["tries"]) == 2 and report["predicted_latency_ms"] < v["tries"][0]["predicted_ms"]
    assert load_config(copy / "model").card["predicted_latency_ms"] == pytest.approx(v["predicted_ms"])


def test_flops_efficiency_with_a_cost_budget(demo_teacher, space, tmp_path, capsys):
    from latency.loss import build_cost_model
    from nas.cli import main
    from nas.spaces.ops import op_flops

    flops = build_cost_model(space, lambda s: op_flops(s, CTX), 5, unit="flops")
    (lo, _), (hi, _) = flops.extremes()
    budget = lo + 0.2 * (hi - lo)
    out = tmp_path / "flops"
    rc = main(["search", "adabert", "--task", "demo", "--train-limit", "48", "--dev-limit", "40", "--teacher",
               str(demo_teacher.path), "--profile", PROFILE, "--efficiency", "flops", "--budget-cost", str(budget),
               "--out", str(out), "--epochs", "1", "--retrain-epochs", "1", "--batch-size", "16", "--max-len", "32",
               "--no-measure", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["efficiency"] == "flops" and report["budget_ms"] is None and report["budget_cost"] == budget
    assert 0.935 * budget <= report["flops"] <= 0.985 * budget  # the fit works in the search's own unit
    assert report["predicted_latency_ms"] > 0 and (out / "model.onnx").is_file()
    assert pd.read_csv(out / "history.csv")["expected_cost"].between(lo, hi).all()


def test_measure_adds_the_measured_fields_on_resume(run, demo_teacher, demo_small, tmp_path):
    out, first = run
    copy = tmp_path / "measured"
    shutil.copytree(out, copy)
    report = run_adabert(demo_small, demo_teacher.path, PROFILE, BUDGET_MS, copy, config=SearchConfig(**CFG),
                         measure=True)
    for key in REPORT_FIELDS:
        assert key in report, key
    assert report["student_accuracy"] == first["student_accuracy"]  # the stages done are not redone
    assert report["measured_latency_ms"] > 0 and report["teacher_latency_ms"] > 0 and report["bert_base_latency_ms"] > 0
    assert report["speedup_vs_teacher"] == pytest.approx(report["teacher_latency_ms"] / report["measured_latency_ms"])
    assert report["speedup_vs_bert_base"] == pytest.approx(report["bert_base_latency_ms"] / report["measured_latency_ms"])
    assert report["measured_p10_ms"] <= report["measured_latency_ms"] <= report["measured_p90_ms"]
    if report["measured_on_profile_device"]:
        assert report["budget_met"] == (report["measured_latency_ms"] <= BUDGET_MS)
        assert report["measured_vs_predicted"] == pytest.approx(report["measured_latency_ms"] /
                                                                report["predicted_latency_ms"])
        assert ("the latency that profile" in report["measure_note"]) == (
            not 1 / 1.15 <= report["measured_vs_predicted"] <= 1.15)
    else:
        assert report["budget_met"] is None and "not the profile's device" in report["measure_note"]
    assert read_json(copy / "report.json")["measured_latency_ms"] == report["measured_latency_ms"]
    from nas.modeling import load_config

    # the model card says how it was measured, allocator included (what a deployment sets to see these latencies)
    assert load_config(copy / "model").card["measure_protocol"] == report["measure_protocol"]
    assert "allocator" in report["measure_protocol"] or "GLIBC_TUNABLES" in report["measure_protocol"]


# --------------------------------------------------------------------------------------------------- resume
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two runs side by side on two cores, one thread each


def _search_cmd(teacher: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "search", "adabert", "--task", "demo", "--train-limit", "48",
            "--dev-limit", "40", "--teacher", str(teacher), "--profile", PROFILE, "--budget-ms", str(BUDGET_MS),
            "--out", str(out), "--epochs", "5", "--retrain-epochs", "1", "--batch-size", "8", "--max-len", "32",
            "--no-measure", "--json"]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent, env=ENV)


def test_a_killed_search_resumes_to_the_uninterrupted_result(demo_teacher, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = _start(_search_cmd(demo_teacher.path, whole), tmp_path / "whole.log")
    victim = _start(_search_cmd(demo_teacher.path, killed), tmp_path / "killed.log")
    deadline = time.monotonic() + 300
    while not (killed / "search.pt").exists():  # written at the end of search epoch 1 (of 5)
        assert victim.poll() is None, "the run ended before its first checkpoint: " + (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(60) == -signal.SIGKILL
    assert not (killed / "arch_weights.json").exists(), "killed too late: the search had finished"
    state = torch.load(killed / "search.pt", weights_only=True)
    assert state["epoch"] >= 1 and state["history"]

    resumed = subprocess.run(_search_cmd(demo_teacher.path, killed), capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(300) == 0, (tmp_path / "whole.log").read_text()

    a, b = read_json(killed / "arch_weights.json"), read_json(whole / "arch_weights.json")
    assert set(a["probabilities"]) == set(b["probabilities"])
    for name in a["probabilities"]:
        assert np.allclose(a["probabilities"][name], b["probabilities"][name], rtol=0, atol=1e-6), name
    assert read_json(killed / "arch.json") == read_json(whole / "arch.json")
    ra, rb = read_json(killed / "report.json"), read_json(whole / "report.json")
    assert ra["student_accuracy"] == rb["student_accuracy"] and ra["predicted_latency_ms"] == rb["predicted_latency_ms"]
    assert json.loads(resumed.stdout)["student_accuracy"] == ra["student_accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(killed / "history.csv"), pd.read_csv(whole / "history.csv"),
                                  check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(killed / "retrain.csv"), pd.read_csv(whole / "retrain.csv"),
                                  check_exact=False, rtol=1e-6)
    assert not (killed / "search.pt").exists() and not (killed / "retrain.pt").exists()


def test_measure_note_says_when_the_profile_cannot_confirm_this_cpu():
    from types import SimpleNamespace

    from latency.device import cpu_id
    from nas.adabert.measure import measure_note

    mine = SimpleNamespace(meta={"device": {"cpu_model": "AMD EPYC", "cpu_id": cpu_id()}})
    older = SimpleNamespace(meta={"device": {"cpu_model": "AMD EPYC"}})  # made before hwnas recorded cpu_id
    assert measure_note(mine, []) == "measured on the profile's device with its backend, threads and protocol"
    assert ("no cpu_id" in measure_note(older, [])) == bool(cpu_id())
    note = measure_note(older, ["device.cores 2 -> 4"], "no budget is claimed met or missed")
    assert note.startswith("this machine is not the profile's device (device.cores 2 -> 4)") and \
        note.endswith("no budget is claimed met or missed")


def test_measure_note_warns_when_the_models_do_not_run_as_the_profile_predicts():
    from types import SimpleNamespace

    from latency.device import cpu_id
    from nas.adabert.measure import measure_note

    prof = SimpleNamespace(name="amd-epyc-2c_ort-1.31_t1", meta={"device": {"cpu_model": "AMD EPYC", "cpu_id": cpu_id()}})
    plain = "measured on the profile's device with its backend, threads and protocol"
    assert measure_note(prof, [], ratio=1.12) == plain == measure_note(prof, [], ratio=1 / 1.12)
    note = measure_note(prof, [], ratio=0.54)
    assert note.startswith(plain + "; measured 0.54x the latency that profile amd-epyc-2c_ort-1.31_t1 predicts")
    assert "hwnas profile --transfer-from amd-epyc-2c_ort-1.31_t1 --out NEW" in note
    assert "1.60x" in measure_note(prof, [], ratio=1.6)
    assert "predicts" not in measure_note(prof, ["device.cores 2 -> 4"], ratio=None)  # another device: said already
    # runs that page-faulted: the note says so, and the speed warning names that cause before another machine
    faulted = measure_note(prof, [], ratio=1.2, faults_per_run=9000.0)
    assert "the runs page-faulted" in faulted and "each run took 9000 fresh pages" in faulted
    assert "--transfer-from" not in faulted and "hwnas recheck amd-epyc-2c_ort-1.31_t1" in faulted
    assert measure_note(prof, [], ratio=1.0, faults_per_run=9000.0).endswith("(README, 'Page faults')")
    assert measure_note(prof, [], ratio=1.0, faults_per_run=10.0) == plain
    # counted against the run's time: a few hundred faults of a 310 ms model (0.1 %) are no warning, 9,000 of 20 ms are
    assert measure_note(prof, [], ratio=1.0, faults_per_run=300.0, latency_ms=310.0) == plain
    assert "about 68 % of its time" in measure_note(prof, [], ratio=1.0, faults_per_run=9000.0, latency_ms=20.0)
