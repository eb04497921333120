"""The profile's reference rows (``latency.measure.reference_rows``) that benchmarks/budget_fidelity.py measures in
the searched models' rounds and the verify loop beside each pick, and the drift read from them (no timing here)."""
import subprocess
import sys
from pathlib import Path

import pytest

from latency.measure import reference_rows
from latency.profile_data import read_profile
from nas.arch import Architecture
from nas.spaces import Context

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "budget_fidelity.py"
PROFILE = ROOT / "profiles" / "amd-epyc-f26m2-2c_ort-1.31_t1"


def test_reference_rows_come_from_the_test_split_at_the_searched_contexts_first():
    prof = read_profile(PROFILE)
    searched = (Context(1, 128), Context(8, 256))
    refs = reference_rows(prof, 8, searched, seed=0)
    assert len(refs) == 8
    assert {ctx for _, _, ctx in refs} == set(searched)  # enough test rows there: none from elsewhere
    assert {arch.space for _, arch, _ in refs} == {"adabert", "nasbert"}  # spaces and Contexts take turns
    test = prof.e2e[prof.e2e["split"] == "test"]
    for ms, arch, ctx in refs:  # each one a test row: its architecture, Context and latency
        row = test[(test["batch"] == ctx.batch) & (test["seq_len"] == ctx.seq_len) &
                   (test["latency_p50_ms"] == ms)]
        assert len(row) == 1 and Architecture.from_json(row["arch_json"].iloc[0]).key == arch.key
    assert reference_rows(prof, 0, searched, seed=0) == []
    many = reference_rows(prof, 10_000, searched, seed=0)  # more than the searched Contexts hold: the rest follow
    assert len(many) == len(test) and {c for _, _, c in many} > set(searched)
    only = reference_rows(prof, 6, searched, seed=0, space="nasbert")  # one space's rows only
    assert len(only) == 6 and {a.space for _, a, _ in only} == {"nasbert"}


def test_in_rounds_drift_divides_the_speed_out_over_what_the_predictor_carried(benchmark_module):
    bf = benchmark_module("budget_fidelity")
    rows = [{"budget_ms": 10.0, "measured_latency_ms": 10.8, "predicted_latency_ms": 10.2},
            {"budget_ms": 20.0, "measured_latency_ms": 20.5, "predicted_latency_ms": 19.5}]
    pairs = [(1.0, 1.08), (2.0, 2.16), (4.0, 4.32)]  # the machine 8 % slower than on the profile's day
    d = bf.in_rounds_drift(rows, pairs)
    assert d["drift_pct"] == pytest.approx(8.0) and d["n"] == 3
    assert d["within_target"] == 2  # 10.0 and 18.98 ms: both in [0.90, 1.05] x budget
    assert d["predicted_within_5_pct"] == 1.0  # 10.2 vs 10.0, 19.5 vs 18.98
    carried = bf.in_rounds_drift(rows, pairs, speed=1.08)  # the predictor already carried it: no drift left
    assert carried["drift_pct"] == pytest.approx(0.0, abs=1e-9) and carried["within_target"] == 1  # 10.8 is over
    assert carried["predicted_within_5_pct"] == 0.5 and carried["predicted_within_10_pct"] == 1.0


@pytest.mark.parametrize("flag", ["--reference", "--verify-references"])
def test_a_negative_reference_count_is_one_line(flag):
    out = subprocess.run([sys.executable, str(SCRIPT), str(PROFILE), flag, "-1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stdout.strip() == f"{flag} must be 0 or more, got -1"
