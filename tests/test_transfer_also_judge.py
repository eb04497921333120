"""benchmarks/transfer_profile.py --also-judge: a transfer judged on another full profile of the target (no timing)."""
from pathlib import Path

import pytest

from latency.predictor import load_predictor
from latency.profile_data import ProfileData, read_profile

ROOT = Path(__file__).resolve().parents[1]
# a frozen torch sitting (the shipped profile until 2026-12-06 17:08), so the figures below do not move when
# the shipped profile is re-measured
TORCH = ROOT / "benchmarks" / "results" / "sittings" / "amd-epyc-f26m2-2c_torch-2.13_t1_2026-12-05T2203"
ORT = ROOT / "profiles" / "amd-epyc-f26m2-2c_ort-1.31_t1"
SITTING = ROOT / "benchmarks" / "results" / "sittings" / "amd-epyc-f26m2-2c_torch-2.13_t1_2026-12-06T1051_per_round"


@pytest.fixture
def tp(benchmark_module, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports predictor_accuracy from its own folder
    return benchmark_module("transfer_profile")


def test_another_backend_is_refused_in_one_line(tp):
    with pytest.raises(SystemExit, match=r"^transfer_profile: --also-judge .* give full profiles of the target's "
                                         r"backend, device and threads$"):
        tp.check_also(read_profile(TORCH), [read_profile(ORT)])
    tp.check_also(read_profile(TORCH), [read_profile(SITTING)])  # another sitting of the same target: fine


def test_a_transfer_is_judged_on_the_other_sitting_with_its_speed_divided_out(tp, monkeypatch):
    torch_p, extra = read_profile(TORCH), read_profile(SITTING)
    # stand-in for a transfer measurement: that sitting's calibration rows, judged by its own predictor
    new = ProfileData(torch_p.path, torch_p.meta, torch_p.ops, torch_p.e2e[torch_p.e2e["split"] == "calibration"])
    monkeypatch.setattr(tp, "fit", lambda prof, kind: load_predictor(prof.path / "predictor.json", prof))
    out = tp.judge_also(extra, new, load_predictor(TORCH / "predictor.json"))
    ratio = out["state_offset"]["e2e"]["median_ratio"]
    assert 0.85 < ratio < 1.0  # new / extra: that sitting ran the shared whole models ~5 % faster
    test = extra.e2e[(extra.e2e["split"] == "test") & ~extra.e2e["arch_json"].isin(set(new.e2e["arch_json"]))]
    for space in ("adabert", "nasbert"):
        assert out["transfer"][space]["n"] == int((test["space"] == space).sum())  # only architectures it never timed
        raw, adjusted = out["transfer"][space], out["transfer_state_adjusted"][space]
        assert adjusted["within_10_pct"] > raw["within_10_pct"] and adjusted["within_10_pct"] > 0.85
        assert out["full_profile"][space]["within_10_pct"] > 0.9
    assert out["profile"].endswith("_per_round")


def test_a_missing_profile_is_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer_profile.py"), "--also-judge",
                          str(tmp_path / "none"), "--markdown"], capture_output=True, text=True)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("transfer_profile: ") and "none: not a profile folder" in out.stderr
