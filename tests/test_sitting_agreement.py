"""benchmarks/sitting_agreement.py: how well whole-model rows repeat between profiles of one machine (no timing)."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sitting_agreement.py"
# a frozen torch sitting (the shipped profile until 2026-12-06 17:08), so the figures below do not move when
# the shipped profile is re-measured
TORCH = ROOT / "benchmarks" / "results" / "sittings" / "amd-epyc-f26m2-2c_torch-2.13_t1_2026-12-05T2203"
ORT = ROOT / "profiles" / "amd-epyc-f26m2-2c_ort-1.31_t1"


def sitting(src: Path, dest: Path, factor: float, noise: float, seed: int) -> Path:
    """A copy of ``src`` whose whole-model rows ran ``factor`` x slower with per-row log-normal ``noise``."""
    dest.mkdir(parents=True)
    for name in ("profile.json", "ops.csv", "e2e.csv"):
        shutil.copy(src / name, dest / name)
    e2e = pd.read_csv(dest / "e2e.csv")
    rng = np.random.default_rng(seed)
    e2e["latency_p50_ms"] = e2e["latency_p50_ms"] * factor * np.exp(rng.normal(0.0, noise, len(e2e)))
    e2e.to_csv(dest / "e2e.csv", index=False)
    return dest


def test_three_sittings_give_each_its_own_noise_and_the_ceiling_it_allows(tmp_path, benchmark_module):
    sa = benchmark_module("sitting_agreement")
    a = sitting(TORCH, tmp_path / "a", 1.00, 0.005, 0)
    b = sitting(TORCH, tmp_path / "b", 1.10, 0.005, 1)  # a slower hour: the factor, not noise
    c = sitting(TORCH, tmp_path / "c", 0.95, 0.060, 2)  # a noisy sitting
    out = tmp_path / "agreement.json"
    assert sa.main([str(a), str(b), str(c), "--loso", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["spaces"]) == {"adabert", "nasbert"}
    for r in doc["spaces"].values():
        pair = r["pairs"][f"{b} vs {a}"]
        assert pair["factor"] == pytest.approx(1.10, rel=0.01)  # divided out before any share
        assert pair["within_5_pct"] == 100.0 and pair["spearman_min_ctx"] > 0.99
        noise = {k: v["noise_sd_pct"] for k, v in r["sittings"].items()}
        assert noise[str(c)] == pytest.approx(6.0, rel=0.25) and noise[str(a)] < 2 and noise[str(b)] < 2
        ceil = r["sittings"][str(c)]["ceiling_within_5_pct"]
        assert 50 < ceil < 70  # ~ P(|N(0, 6 %)| <= 5 %)
        assert r["pairs"][f"{c} vs {a}"]["within_5_pct"] < 80
        assert r["predictors"] == {}  # no predictor.json in these folders: nothing to judge
    loso = doc["leave_one_sitting_out"]
    assert set(loso) == {str(a), str(b), str(c)}
    held_b = loso[str(b)][f"merged: {a} + {c}"]  # fitted on a and c merged (at a's speed), judged on b
    for space in ("adabert", "nasbert"):
        assert held_b[space]["factor"] == pytest.approx(1.10, rel=0.02) and held_b[space]["within_10_pct"] > 90


def test_a_predictor_is_judged_on_every_sitting_and_a_stale_one_is_said(tmp_path, benchmark_module):
    sa = benchmark_module("sitting_agreement")
    b = sitting(TORCH, tmp_path / "b", 1.10, 0.0, 1)
    shutil.copy(TORCH / "predictor.json", b / "predictor.json")  # fitted on other tables: refused, said
    res = sa.agreement([(str(TORCH), sa.read_profile(TORCH)), (str(b), sa.read_profile(b))])
    for r in res.values():
        own = r["predictors"][str(TORCH)]
        assert own[str(b)]["factor"] == pytest.approx(1.10, rel=1e-6)
        # the same rows 10 % slower: with the factor divided out the predictor reads them as its own
        assert own[str(b)]["within_5_pct"] == own[str(TORCH)]["within_5_pct"] > 50
        assert "error" in r["predictors"][str(b)]


def test_noise_solves_the_pairs_and_the_ceiling_is_a_normal_share(benchmark_module):
    sa = benchmark_module("sitting_agreement")
    s = sa.sitting_noise({(0, 1): 0.02 ** 2 + 0.03 ** 2, (0, 2): 0.02 ** 2 + 0.01 ** 2,
                          (1, 2): 0.03 ** 2 + 0.01 ** 2}, 3)
    assert [round(math.sqrt(v), 4) for v in s] == [0.02, 0.03, 0.01]
    assert sa.ceiling(0.0, 0.05) == 1.0
    assert sa.ceiling(math.log(1.05), 0.05) == pytest.approx(0.6827, abs=1e-4)  # one sd


@pytest.mark.parametrize("args, says", [
    (["ONE"], "at least two profiles"),
    (["TORCH", "TORCH", "--loso"], "three or more profiles"),
    (["TORCH", "ORT"], "one machine, backend and thread count"),
    (["TORCH", "MISSING"], "not a profile folder"),
    (["TORCH", "nosuchrev:profiles/x"], "git cannot give"),
])
def test_bad_input_is_one_line(tmp_path, args, says):
    names = {"ONE": str(TORCH), "TORCH": str(TORCH), "ORT": str(ORT), "MISSING": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, str(SCRIPT), *[names.get(a, a) for a in args],
                          "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert out.returncode != 0
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "x.json").exists()


def test_profiles_sharing_no_rows_are_refused(tmp_path, benchmark_module):
    sa = benchmark_module("sitting_agreement")
    b = sitting(TORCH, tmp_path / "b", 1.0, 0.0, 0)
    e2e = pd.read_csv(b / "e2e.csv")
    e2e["seq_len"] = e2e["seq_len"] + 1  # no Context in common
    e2e.to_csv(b / "e2e.csv", index=False)
    with pytest.raises(SystemExit, match="share no test rows"):
        sa.shared_rows([(str(TORCH), sa.read_profile(TORCH)), (str(b), sa.read_profile(b))])
