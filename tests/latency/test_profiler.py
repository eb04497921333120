"""hwnas profile / measure: the plan, resume after a real SIGKILL, refusal of foreign folders, protocol fields,
roofline, and the measure command's JSON."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from latency.measure import quick_protocol
from latency.profiler import ProfileConfig, plan_jobs, run_profile
from latency.roofline import roofline_rows
from latency.stats import Protocol
from latency.table import (
    E2E_COLUMNS,
    E2E_KINDS,
    OPS_COLUMNS,
    OPS_KINDS,
    ProfileError,
    load_profile,
    read_rows,
)
from nas.arch import Architecture
from nas.cli import main
from nas.errors import HwnasError

TINY = (("adabert", "tiny"), ("nasbert", "tiny"))
CLI_TINY = ["--space", "adabert,nasbert", "--preset", "tiny", "--quick"]


def tiny_config(**kw) -> ProfileConfig:
    base = dict(spaces=TINY, batch=(1,), seq_len=(16,), e2e=2, protocol=quick_protocol(Protocol()), quick=True,
                search_like=True, search_fractions=(0.5,))
    return ProfileConfig(**{**base, **kw})


def keys(folder):
    ops = read_rows(folder / "ops.csv", OPS_COLUMNS, OPS_KINDS)
    e2e = read_rows(folder / "e2e.csv", E2E_COLUMNS, E2E_KINDS)
    return [(r["op_key"], r["batch"], r["seq_len"]) for r in ops] + [(r["arch_json"], r["batch"], r["seq_len"]) for r in e2e]


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "tiny"
    result = run_profile(tiny_config(), out)
    return out, result


def test_plan_is_seeded_and_complete():
    cfg = tiny_config(batch=(1, 2), seq_len=(16, 32), e2e=4, search_like=False)
    jobs = plan_jobs(cfg)
    assert [j.key for j in jobs] == [j.key for j in plan_jobs(cfg)]
    assert [j.key for j in jobs] != [j.key for j in plan_jobs(replace(cfg, seed=1))]
    assert len({j.key for j in jobs}) == len(jobs)
    n_ops = len({s.key for space in cfg.load_spaces() for s in space.unique_ops()})
    assert len(jobs) == 4 * (n_ops + 2 * 4)
    splits = [j.split for j in jobs if j.kind == "e2e" and j.ctx.batch == 1 and j.ctx.seq_len == 16]
    assert sorted(splits) == ["calibration"] * 4 + ["test"] * 4
    kinds = [j.kind for j in jobs]
    assert kinds[: len(kinds) // 2].count("e2e") > 0  # interleaved, not all ops first


def test_plan_has_homogeneous_architectures_in_both_splits():
    from latency.archsets import homogeneous_archs

    cfg = tiny_config(e2e=4)
    jobs = [j for j in plan_jobs(cfg) if j.kind == "e2e"]
    random = {j.graph for j in plan_jobs(replace(cfg, search_like=False)) if j.kind == "e2e"}
    for space in cfg.load_spaces():
        homo = {a.key: a for a in homogeneous_archs(space, cfg.homogeneous_depths)}
        assert len(homo) == {"adabert": 9 * 2, "nasbert": 4 * 2 + 3}[space.name]  # tiny: 9 edge ops x 2 depths; 4 kinds x 2 widths + the widest with the second parameter of 3 kinds
        planned = {j.graph: j.split for j in jobs if j.graph in set(homo) - random}
        assert set(planned) == set(homo) - random and set(planned.values()) == {"calibration", "test"}
        if space.name == "adabert":  # each op kind: one depth in each split
            by_kind: dict[str, set[str]] = {}
            for k, sp in planned.items():
                by_kind.setdefault(homo[k].choices["n0.in0"], set()).add(sp)
            assert len(by_kind) == 9 and all(v == {"calibration", "test"} for v in by_kind.values())
    assert len({j.key for j in jobs}) == len(jobs)


def test_context_beyond_the_position_table_is_refused():
    with pytest.raises(HwnasError, match=r"--seq-len 256 exceeds .*max_len=128"):
        plan_jobs(tiny_config(seq_len=(256,)))


def test_profile_rows_protocol_roofline_retest(tiny_profile):
    out, result = tiny_profile
    p = load_profile(out)
    derived = p.meta["derived_archs"]
    assert set(derived["archs"]) == {"adabert", "nasbert"} and derived["reference"] == [1, 16]
    planned = {j.key for j in plan_jobs(tiny_config())}
    searched = set(keys(out)) - planned
    assert planned <= set(keys(out)) and len(keys(out)) == len(set(keys(out)))
    assert {k[0] for k in searched} <= {Architecture.from_dict(a).key for v in derived["archs"].values() for a in v}
    assert len(searched) >= 2  # the fastest or slowest architecture may already be a homogeneous one
    assert result["status"] == "complete" and result["ops_rows"] == len(p.ops) and result["e2e_rows"] == len(p.e2e)
    assert (p.ops["latency_p10_ms"] <= p.ops["latency_p50_ms"]).all()
    assert (p.ops["latency_p50_ms"] <= p.ops["latency_p90_ms"]).all()
    assert (p.ops["n_runs"] >= 3).all() and set(p.e2e["split"]) == {"calibration", "test"}
    m = p.meta
    for field in ("cpu_model", "cores", "governor", "gpu", "gpu_driver", "torch", "onnxruntime", "numpy", "threads",
                  "allocator_env"):
        assert field in m["device"], field
    assert {"name", "version", "device", "provider", "threads", "graph_optimization", "dtype"} <= set(m["backend"])
    assert {"warmup_runs", "warmup_min_s", "min_runs", "max_runs", "target_rse", "time_cap_s", "statistic", "order",
            "seed"} <= set(m["protocol"])
    assert m["grid"] == {"batch": [1], "seq_len": [16]} and m["created"] and m["tool_version"]
    assert m["roofline"]["peak_gflops"] > 0 and m["roofline"]["bandwidth_gbs"] > 0
    assert m["retest"]["n"] >= 5 and m["retest"]["median_abs_diff_pct"] >= 0
    assert m["retest"]["when"].startswith("interleaved")
    assert any(g.startswith("retest:") for g, *_ in visit_keys(out))
    assert (out / "roofline.csv").read_text().startswith("op_key,")


def test_rerun_measures_nothing_and_duplicates_nothing(tiny_profile):
    out, _ = tiny_profile
    before = keys(out)
    result = run_profile(tiny_config(), out)
    assert result["visits_measured_now"] == 0 and keys(out) == before


def test_roofline_flags_a_measurement_faster_than_the_bound(tiny_profile):
    out, _ = tiny_profile
    p = load_profile(out)
    roof = p.meta["roofline"]
    row = p.ops.sort_values("flops").iloc[-1].to_dict()  # the largest bound: bound_ms's 6 decimals don't matter
    ok = roofline_rows([row], roof)[0]
    assert not ok["faster_than_bound"] and 0 < ok["pct_of_bound"] <= 100 / (1 - roof["tolerance"])
    broken = roofline_rows([{**row, "latency_p50_ms": ok["bound_ms"] / 10}], roof)[0]  # a timer 10x too fast
    assert broken["faster_than_bound"] and broken["pct_of_bound"] == pytest.approx(1000, rel=0.01)
    free = roofline_rows([{**row, "flops": 0, "bytes": 0}], roof)[0]
    assert free["pct_of_bound"] is None and not free["faster_than_bound"]


def _cli(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_refuses_another_setup_then_force_new(tiny_profile, tmp_path, capsys):
    out, _ = tiny_profile
    argv = ["profile", "--out", str(out), *CLI_TINY, "--batch", "1", "--seq-len", "16", "--e2e", "2", "--json"]
    rc, stdout, err = _cli([*argv, "--threads", "2"], capsys)
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "backend.threads 1 -> 2" in err and "--force-new" in err
    rc, stdout, err = _cli([*argv, "--threads", "2", "--force-new", "--e2e", "0"], capsys)
    assert rc == 0 and json.loads(stdout)["out"] == f"{out}-2"
    assert load_profile(f"{out}-2").meta["backend"]["threads"] == 2


def test_refuses_another_fingerprint_and_a_corrupt_table(tiny_profile, tmp_path, capsys):
    out, _ = tiny_profile
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    meta = json.loads((out / "profile.json").read_text())
    meta["device"]["onnxruntime"] = "1.0.0"
    (foreign / "profile.json").write_text(json.dumps(meta))
    argv = ["profile", "--out", str(foreign), *CLI_TINY, "--search-like", "--batch", "1", "--seq-len", "16", "--e2e", "2"]
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and "device.onnxruntime '1.0.0'" in err and len(err.strip().splitlines()) == 1
    meta["device"]["onnxruntime"] = json.loads((out / "profile.json").read_text())["device"]["onnxruntime"]
    (foreign / "profile.json").write_text(json.dumps(meta))
    (foreign / "ops.csv").write_text("key,ms\n")
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and "ops.csv: bad header" in err


def test_not_a_profile_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ProfileError, match="not a profile folder"):
        run_profile(tiny_config(), tmp_path)


def visit_keys(folder):
    from latency.journal import read_visits

    return [(r["graph"], r["batch"], r["seq_len"], r["visit"]) for r in read_visits(folder / "visits.csv")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_resume_after_sigkill(tmp_path, device):
    """Kill a real `hwnas profile` mid-run (in the first round of visits, then once rows are being written),
    re-run: no row lost or duplicated, the final rows are exactly the planned entries. On a GPU (torch backend) the
    profile also records the clock warm-up, the GPU's clocks and the CUDA-event timer."""
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "nas.cli", "profile", "--out", str(out), *CLI_TINY, "--batch", "1,2",
            "--seq-len", "16,32", "--e2e", "2", "--json"]
    if device == "cuda":
        argv += ["--device", "cuda", "--backend", "torch"]
    expected = sorted(j.key for j in plan_jobs(tiny_config(batch=(1, 2), seq_len=(16, 32), search_like=False)))
    for ready in (lambda: len(visit_keys(out)) >= 5, lambda: len(keys(out)) >= 3):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "visits.csv").exists() and ready():
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        got, visits = keys(out), visit_keys(out)
        assert len(got) == len(set(got)) and len(got) < len(expected)
        assert len(visits) == len(set(visits)) and 0 < len(visits) < 2 * len(expected)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = len(visits)
    final, visits = keys(out), visit_keys(out)
    assert json.loads(done.stdout)["visits_measured_now"] == len(visits) - before
    assert sorted(final) == expected and len(final) == len(set(final))
    assert not (out / ".work").exists() and not (out / ".lock").exists()  # scratch of the killed runs cleared
    per_entry = {}
    for g, b, s, v in visits:
        per_entry.setdefault((g, b, s), []).append(v)
    assert len(visits) == len(set(visits))
    assert all(sorted(v) == list(range(len(v))) and 2 <= len(v) <= 3 for v in per_entry.values())  # retakes: <= 3
    meta = load_profile(out).meta
    assert meta["status"] == "complete"
    # every session (the killed ones too) records the allocator it measured under: the protocol's
    assert meta["protocol"]["allocator"] == "no_mmap"
    assert {s["allocator"] for s in meta["sessions"]} <= {"no_mmap", "default (not glibc: no_mmap not set)"}
    if device == "cuda":
        assert meta["backend"]["device"] == "cuda" and "CUDA events" in meta["backend"]["timer"]
        assert meta["device"]["gpu"] and meta["device"]["gpu_memory_gb"] > 0 and meta["device"]["cuda"]
        settle = meta["sessions"][-1]["settle"]
        assert settle["device"] == "cuda" and settle["probe_ms_last"] > 0 and settle["seconds"] >= 2.0
        assert meta["roofline"]["summary"]["n_faster_than_bound"] == 0


def test_a_row_lost_after_its_last_visit_is_rebuilt_without_measuring(tiny_profile):
    out, _ = tiny_profile
    lines = (out / "ops.csv").read_text().splitlines(keepends=True)
    (out / "ops.csv").write_text("".join(lines[:-1]))  # as if killed between the last visit and the row
    result = run_profile(tiny_config(), out)
    assert result["visits_measured_now"] == 0
    assert sorted((out / "ops.csv").read_text().splitlines(keepends=True)) == sorted(lines)


def test_measure_json(tmp_path, capsys):
    assert main(["sample", "--space", "nasbert", "--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    rc, stdout, _ = _cli(["measure", str(tmp_path / "a.json"), "--batch", "2", "--seq-len", "16", "--json"], capsys)
    r = json.loads(stdout)
    assert rc == 0
    assert {"latency_p50_ms", "latency_p10_ms", "latency_p90_ms", "cv", "n_runs", "batch", "seq_len", "flops",
            "params", "backend", "version", "threads", "protocol", "arch_json", "faults_per_run", "fault_warning"} <= set(r)
    assert r["batch"] == 2 and r["backend"] == "onnxruntime" and r["n_runs"] >= r["protocol"]["min_runs"]


def test_measure_in_fresh_processes_reports_the_median_and_each(tmp_path, capsys):
    assert main(["sample", "--space", "nasbert", "--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    rc, stdout, _ = _cli(["measure", str(tmp_path / "a.json"), "--batch", "2", "--seq-len", "16", "--processes", "3",
                          "--json"], capsys)
    r = json.loads(stdout)
    per = r["processes"]
    assert rc == 0 and per["n"] == 3 and len(per["latency_p50_ms"]) == 3
    assert r["latency_p50_ms"] == sorted(per["latency_p50_ms"])[1]
    assert per["slowest_over_fastest"] == max(per["latency_p50_ms"]) / min(per["latency_p50_ms"]) >= 1.0
    rc, stdout, err = _cli(["measure", str(tmp_path / "a.json"), "--processes", "0"], capsys)
    assert rc != 0 and stdout == "" and "--processes must be at least 1" in err and len(err.strip().splitlines()) == 1
    rc, stdout, err = _cli(["measure", str(tmp_path / "a.json"), "--processes", "2", "--batch", "0"], capsys)
    assert rc != 0 and "process 1 of 2 failed" in err and len(err.strip().splitlines()) == 1


def test_measure_with_a_profiles_protocol(tiny_profile, tmp_path, capsys):
    out, _ = tiny_profile
    assert main(["sample", "--space", "adabert", "--preset", "tiny", "--seed", "2", "--out", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    rc, stdout, _ = _cli(["measure", str(tmp_path / "a.json"), "--profile", str(out), "--batch", "1", "--seq-len", "16",
                          "--json"], capsys)
    r = json.loads(stdout)
    stored = json.loads((out / "profile.json").read_text())["protocol"]
    assert rc == 0 and r["protocol"] == Protocol.from_dict(stored).to_dict()
    assert 2 <= r["visits"] <= stored["max_visits"] and r["n_runs"] >= 2 * stored["cap_min_runs"]


class StepBackend:
    """A backend whose every run takes ``run_s`` seconds (for the warm-up rule)."""

    def __init__(self, run_s: float) -> None:
        self.run_s, self.calls = run_s, []

    def time(self, runnable, n: int) -> list[float]:
        self.calls.append(n)
        return [self.run_s] * n


@pytest.mark.parametrize("run_s, runs", [(0.001, 100), (0.03, 4), (0.07, 2), (0.2, 1)])
def test_warm_up_reaches_its_minimum_without_overshooting(run_s, runs):
    from latency.measure import warm_up

    rules = Protocol().for_kind("e2e")  # at least 2 runs and 0.1 s, unless one run alone lasts 0.1 s
    be = StepBackend(run_s)
    assert warm_up(be, None, rules) == runs == sum(be.calls) and len(be.calls) <= 3


def test_whole_models_take_two_visits_and_a_third_only_when_they_disagree(tmp_path):
    from latency.journal import read_visits
    from latency.stats import wants_retake

    protocol = replace(quick_protocol(Protocol()), visits=3, e2e_visits=2, max_visits=3, retake_spread=0.01)
    run_profile(tiny_config(protocol=protocol, search_like=False), tmp_path / "p")
    per_entry: dict = {}
    for r in read_visits(tmp_path / "p" / "visits.csv"):
        per_entry.setdefault((r["entry"], r["graph"], r["batch"], r["seq_len"]), []).append(r)
    e2e_rules = protocol.for_kind("e2e")
    for (entry, *_), got in per_entry.items():
        got = sorted(got, key=lambda r: r["visit"])
        assert [r["visit"] for r in got] == list(range(len(got)))
        if entry == "op":
            assert len(got) == 3
        else:
            first_two = [r["latency_p50_ms"] for r in got[:2]]
            assert len(got) == (3 if wants_retake(first_two, e2e_rules) else 2)
    assert any(e == "e2e" for e, *_ in per_entry)


def budget_run(tmp_path, monkeypatch, name, budget_s):
    """A tiny profile under ``budget_s`` on a made-up clock: an op visit takes 1 s, a whole model's 2 s (the
    timings themselves are real). Returns the folder, its visits per entry, the clock's end and the planned jobs."""
    from types import SimpleNamespace

    import latency.profiler as profiler
    from latency.journal import read_visits

    clock = [0.0]
    real = profiler.measure_visit

    def visit(graphs, job, protocol):
        clock[0] += 2.0 if job.kind == "e2e" else 1.0
        return real(graphs, job, protocol)

    monkeypatch.setattr(profiler, "measure_visit", visit)
    monkeypatch.setattr(profiler, "time", SimpleNamespace(perf_counter=lambda: clock[0], monotonic=lambda: clock[0]))
    protocol = replace(quick_protocol(Protocol()), visits=2, e2e_visits=2, max_visits=3, retake_spread=0.0,
                       budget_s=budget_s, retest_fraction=0.0, retest_min=0)
    cfg = tiny_config(protocol=protocol, search_like=False, e2e=3)
    out = tmp_path / name
    result = run_profile(cfg, out)
    per_entry: dict = {}
    for r in read_visits(out / "visits.csv"):
        per_entry.setdefault((r["entry"], r["graph"], r["batch"], r["seq_len"]), []).append(r["visit"])
    return out, result, per_entry, clock[0], plan_jobs(cfg)


def test_a_measuring_budget_keeps_every_whole_model_visit_and_ends_on_time(tmp_path, monkeypatch):
    # no budget: the main rounds' two visits of every entry, and third visits for pairs that differ (spread 0)
    _, _, full, took, jobs = budget_run(tmp_path, monkeypatch, "full", None)
    n_op, n_e2e = sum(j.kind == "op" for j in jobs), sum(j.kind == "e2e" for j in jobs)
    assert len(full) == n_op + n_e2e and all(len(v) >= 2 for v in full.values())
    assert any(len(v) == 3 for v in full.values())
    # a budget that holds the whole models' visits (4 s each entry) and about half the ops' first visits
    budget = 4.0 * n_e2e + n_op / 2
    out, result, got, end, _ = budget_run(tmp_path, monkeypatch, "cut", budget)
    assert end <= budget + 1.0  # at most the op visit in flight past it
    e2e = [v for (kind, *_), v in got.items() if kind == "e2e"]
    assert len(e2e) == n_e2e and all(sorted(v)[:2] == [0, 1] for v in e2e)  # every whole model, both visits
    ops = [v for (kind, *_), v in got.items() if kind == "op"]
    assert 0 < len(ops) < n_op  # ops measured until the whole models' time had to be kept
    cut = result["budget"]
    assert cut["entries_unmeasured"] == n_op - len(ops) and cut["visits_skipped"] > 0
    assert cut["budget_s"] == budget
    rows = keys(out)
    assert len(rows) == len(got)  # every entry with a visit has its row, from the visits it has; no other
    meta = json.loads((out / "profile.json").read_text())
    assert meta["status"] == "complete" and meta["sessions"][-1]["budget"]["rows_from_fewer_visits"] > 0
    assert set(meta["sessions"][-1]["seconds"]) == {"op", "e2e"}
    # a budget spent before the first visit: the whole models still get their two visits, no op is measured
    _, result, got, _, _ = budget_run(tmp_path, monkeypatch, "none", 0.0)
    assert all(kind == "e2e" for kind, *_ in got) and len(got) == n_e2e
    assert result["budget"]["entries_unmeasured"] == n_op and result["ops_rows"] == 0


def test_close_partial_then_resume(tmp_path, monkeypatch):
    """A profile interrupted for good (its device gone) is closed as partial from what was measured: retest over
    the closed retest entries, roofline rows, what is missing; nothing measured. Re-running the command resumes
    and completes it, and the partial mark goes."""
    import latency.profiler as profiler

    out = tmp_path / "p"
    cfg = tiny_config(batch=(1, 2), seq_len=(16,))
    real, calls = profiler.measure_visit, {"n": 0}

    def stop_after(*a, **k):
        calls["n"] += 1
        if calls["n"] > 40:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(profiler, "measure_visit", stop_after)
    with pytest.raises(KeyboardInterrupt):
        run_profile(cfg, out)
    monkeypatch.setattr(profiler, "measure_visit", real)
    with pytest.raises(ProfileError, match="needs a reason"):
        profiler.close_partial(out, " ")
    r = profiler.close_partial(out, "the lease ended")
    meta = load_profile(out).meta
    assert r["status"] == meta["status"] == "partial" and meta["partial"]["why"] == "the lease ended"
    missing = meta["partial"]["missing"]
    assert missing["op_entries"] + missing["e2e_entries"] > 0 and missing["searched_architectures"]
    assert (out / "roofline.csv").exists() and r["visits_measured_now"] == 0
    assert profiler.config_from_meta(meta).protocol == cfg.protocol
    done = run_profile(cfg, out)
    meta = load_profile(out).meta
    assert done["status"] == meta["status"] == "complete" and "partial" not in meta
    assert sorted(keys(out)) == sorted(set(keys(out)))
    with pytest.raises(ProfileError, match="is complete"):
        profiler.close_partial(out, "again")


def test_clock_log_samples_the_gpu_at_intervals(tmp_path, monkeypatch):
    """On a GPU, clocks.csv gets one row per interval with the visit count; without nvidia-smi it turns itself off."""
    import latency.profiler as profiler

    clocks = {"sm_mhz": 1980.0, "mem_mhz": 3201.0, "temperature_c": 50.0, "power_w": 300.0}
    monkeypatch.setattr(profiler, "gpu_clocks", lambda: dict(clocks))
    log = profiler.ClockLog(tmp_path, enabled=True, interval_s=3600)
    log.tick(1)
    log.tick(2)  # within the interval: nothing
    log.last = -float("inf")
    log.tick(7)
    rows = read_rows(tmp_path / "clocks.csv", profiler.ClockLog.COLUMNS, {"visits": int, "sm_mhz": float})
    assert [r["visits"] for r in rows] == [1, 7] and rows[0]["sm_mhz"] == 1980.0
    monkeypatch.setattr(profiler, "gpu_clocks", lambda: None)
    log.last = -float("inf")
    log.tick(9)
    assert not log.enabled and len(read_rows(tmp_path / "clocks.csv", profiler.ClockLog.COLUMNS)) == 2
    off = profiler.ClockLog(tmp_path / "cpu", enabled=False, interval_s=0)
    off.tick(1)
    assert not (tmp_path / "cpu").exists()


def test_measure_refuses_a_profile_of_another_device_kind(tiny_profile, tmp_path, capsys):
    out, _ = tiny_profile
    assert main(["sample", "--space", "adabert", "--preset", "tiny", "--seed", "2", "--out", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    rc, stdout, err = _cli(["measure", str(tmp_path / "a.json"), "--profile", str(out), "--device", "cuda",
                            "--batch", "1", "--seq-len", "16"], capsys)
    assert rc != 0 and "is a CPU profile" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1


def test_statistic_min_takes_the_fastest_visit(tmp_path):
    """--statistic min: each row is its fastest visit's percentiles (recorded in the protocol); the CLI passes it."""
    import pandas as pd

    from latency.profile_cli import config_from_args
    from nas.cli import build_parser

    args = build_parser().parse_args(["profile", "--out", str(tmp_path / "x"), "--statistic", "min"])
    assert config_from_args(args).protocol.statistic == "min"
    out = tmp_path / "min"
    run_profile(tiny_config(protocol=replace(quick_protocol(Protocol()), statistic="min"), search_like=False), out)
    assert load_profile(out).meta["protocol"]["statistic"] == "min"
    v = pd.read_csv(out / "visits.csv")
    fastest = v[~v.graph.str.startswith("retest:")].groupby(["graph", "batch", "seq_len"]).latency_p50_ms.min()
    ops = load_profile(out).ops
    assert len(ops) > 0 and all(
        r.latency_p50_ms == pytest.approx(fastest[(r.op_key, r.batch, r.seq_len)]) for r in ops.itertuples())


def test_whole_models_get_a_new_session_every_visit_ops_keep_theirs():
    """protocol.e2e_session "per_visit": each whole-model visit runs in a session that has run no other Context
    (as a user's session at one shape); op graphs keep theirs; "shared" keeps every session; profiles written
    before the field were measured "shared"; anything else is refused in one line."""
    from latency.backends.base import get_backend
    from latency.measure import cuda_protocol
    from latency.profiler import Graphs

    assert Protocol().e2e_session == "per_visit" and cuda_protocol(Protocol()).e2e_session == "shared"
    old = {k: v for k, v in Protocol().to_dict().items() if k != "e2e_session"}
    assert Protocol.from_dict(old).e2e_session == "shared"
    jobs = plan_jobs(tiny_config(batch=(1, 2), seq_len=(16,), e2e=2, search_like=False))
    e2e = [j for j in jobs if j.kind == "e2e" and j.graph == next(j.graph for j in jobs if j.kind == "e2e")]
    op = [j for j in jobs if j.kind == "op" and j.graph == next(j.graph for j in jobs if j.kind == "op")]
    assert len(e2e) == 2 and len(op) == 2  # one graph at two Contexts each
    with get_backend("onnxruntime") as be:
        for mode, renewed in (("per_visit", True), ("shared", False)):
            graphs = Graphs(be, 0, mode)
            sessions = []
            for job in (*e2e, e2e[0]):
                sessions.append(graphs.bound(job).session)
            assert (len({id(s) for s in sessions}) == 3) == renewed and (len({id(s) for s in sessions}) == 1) != renewed
            ops = [graphs.bound(job).session for job in (*op, op[0])]
            assert len({id(s) for s in ops}) == 1
            assert graphs.backend.time(graphs.bound(e2e[1]), 2)[0] > 0
        with pytest.raises(HwnasError, match="e2e_session 'sometimes' is none of per_visit, shared"):
            Graphs(be, 0, "sometimes")


def test_each_round_of_visits_in_a_process_of_its_own(tmp_path, tiny_profile):
    """``visit_processes="per_round"``: the same entries as a one-process profile, each round (and retake round) in
    a fresh process, recorded in the protocol and the session; a resumed run measures nothing again."""
    cfg = tiny_config(backend="torch", protocol=replace(quick_protocol(Protocol()), visit_processes="per_round"))
    out = tmp_path / "per_round"
    result = run_profile(cfg, out)
    meta = json.loads((out / "profile.json").read_text())
    assert meta["status"] == "complete" and meta["protocol"]["visit_processes"] == "per_round"
    ops = [k for k in keys(out) if not k[0].startswith("{")]
    assert sorted(ops) == sorted(k for k in keys(tiny_profile[0]) if not k[0].startswith("{"))
    assert {j.key for j in plan_jobs(cfg)} <= set(keys(out))  # searched architectures come on top, from its own table
    with open(out / "visits.csv", newline="") as f:
        visits = list(csv.DictReader(f))
    rounds_used = {int(v["visit"]) for v in visits}
    assert meta["sessions"][-1]["round_processes"] >= len(rounds_used) >= 2
    assert result["visits_measured_now"] == len(visits)
    again = run_profile(cfg, out)
    assert again["visits_measured_now"] == 0


def test_an_unknown_visit_processes_rule_is_one_line(tmp_path):
    cfg = tiny_config(protocol=replace(quick_protocol(Protocol()), visit_processes="per_visit"))
    with pytest.raises(ProfileError, match="visit_processes 'per_visit' is none of one, per_round"):
        run_profile(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_every_visit_is_scaled_to_the_profiles_reference_probe_time(tiny_profile):
    """``protocol.probe == "matmul"`` (the CPU default): profile.json holds the reference probe time, every visit
    its own probe median and its milliseconds at the reference speed, the session how fast the machine ran."""
    from latency.journal import read_visits

    out, _ = tiny_profile
    meta = json.loads((out / "profile.json").read_text())
    assert meta["protocol"]["probe"] == "matmul"
    ref = meta["probe"]["reference_ms"]
    assert ref > 0 and meta["probe"]["samples"] >= 10 and "matmul" in meta["probe"]["workload"]
    visits = read_visits(out / "visits.csv")
    assert visits and all(v["probe_ms"] > 0 for v in visits)
    ratio = meta["sessions"][0]["probe_vs_reference"]
    assert 0.5 < ratio < 2  # one machine, minutes apart
    assert ratio == pytest.approx(sorted(v["probe_ms"] for v in visits)[len(visits) // 2] / ref, rel=0.05)


def test_the_journal_stores_a_visit_at_the_reference_speed(tmp_path):
    """A visit whose probe read twice the reference ran on a machine twice as slow: its milliseconds are halved
    (cv and n_runs kept), its raw probe stored; its entry's row comes from the scaled visits."""
    from latency.journal import Journal, read_visits

    job = plan_jobs(tiny_config(search_like=False))[0]
    protocol = replace(quick_protocol(Protocol()), visits=2, e2e_visits=2, max_visits=2)  # no retake
    raw = {"latency_p50_ms": 4.0, "latency_p10_ms": 3.8, "latency_p90_ms": 4.4, "mean_ms": 4.1, "sd_ms": 0.2,
           "cv": 0.05, "n_runs": 9, "rse": 0.01, "stop": "stable"}
    with Journal(tmp_path, [job], protocol, probe_reference_ms=0.25) as j:
        j.add(job, 0, {**raw, "probe_ms": 0.5})
        j.add(job, 1, {**raw, "probe_ms": 0.25})
    v = read_visits(tmp_path / "visits.csv")
    assert [x["latency_p50_ms"] for x in v] == [2.0, 4.0] and [x["sd_ms"] for x in v] == [0.1, 0.2]
    assert [x["probe_ms"] for x in v] == [0.5, 0.25] and [x["n_runs"] for x in v] == [9, 9]
    row = read_rows(tmp_path / ("ops.csv" if job.kind == "op" else "e2e.csv"),
                    OPS_COLUMNS if job.kind == "op" else E2E_COLUMNS, OPS_KINDS if job.kind == "op" else E2E_KINDS)
    assert row[0]["latency_p50_ms"] == 3.0  # the median of 2.0 and 4.0
    with Journal(tmp_path / "b", [job], protocol) as j, pytest.raises(ValueError, match="reference probe time"):
        j.add(job, 0, {**raw, "probe_ms": 0.5})  # no reference: refused, nothing half-scaled written


def test_probe_none_measures_raw_visits_and_a_probed_folder_refuses_it(tiny_profile, tmp_path):
    cfg = tiny_config(protocol=replace(quick_protocol(Protocol()), probe="none"), search_like=False)
    out = tmp_path / "raw"
    run_profile(cfg, out)
    meta = json.loads((out / "profile.json").read_text())
    assert meta["protocol"]["probe"] == "none" and "probe" not in meta
    assert "probe_ms" not in (out / "visits.csv").read_text().splitlines()[0]
    with pytest.raises(ProfileError, match=r"protocol.probe 'matmul' -> 'none'"):
        run_profile(replace(tiny_config(), protocol=cfg.protocol), tiny_profile[0])


def test_a_bad_or_gpu_probe_is_one_line_before_anything_is_written(tmp_path):
    bad = tiny_config(protocol=replace(quick_protocol(Protocol()), probe="sleep"))
    with pytest.raises(ProfileError, match="protocol.probe 'sleep' is none of matmul, none"):
        run_profile(bad, tmp_path / "bad")
    gpu = tiny_config(device="cuda", protocol=quick_protocol(Protocol()))
    with pytest.raises(ProfileError, match="--probe none"):
        run_profile(gpu, tmp_path / "gpu")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "gpu").exists()


def test_measure_reads_a_model_at_the_profiles_reference_speed(monkeypatch):
    """With a profile's reference probe time, every visit is also scaled to it: a probe reading twice the reference
    (a machine twice as slow) halves the latency at the reference; the raw fields stay raw. Without a probe in the
    protocol nothing of it is timed or reported."""
    import latency.measure as m
    from nas.spaces import get_space
    from nas.spaces.ops import Context

    monkeypatch.setattr(m.Probe, "samples", lambda self, n: [0.0006] * n)  # 0.6 ms, twice the 0.3 ms reference
    arch = get_space("nasbert", "tiny").sample(0)
    quick = quick_protocol(Protocol())
    r = m.measure_arch(arch, Context(1, 16), backend="torch", protocol=quick, probe_reference_ms=0.3)
    assert r["probe_ms"] == 0.6 and r["probe_vs_reference"] == 2.0
    assert r["latency_at_reference_ms"] == pytest.approx(r["latency_p50_ms"] / 2, abs=2e-6)
    plain = m.measure_arch(arch, Context(1, 16), backend="torch", protocol=quick)
    assert plain["probe_ms"] == 0.6 and "latency_at_reference_ms" not in plain  # no reference: read, not scaled
    raw = m.measure_arch(arch, Context(1, 16), backend="torch", protocol=replace(quick, probe="none"),
                         probe_reference_ms=0.3)
    assert "probe_ms" not in raw and "latency_at_reference_ms" not in raw
