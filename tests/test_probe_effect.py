"""benchmarks/probe_effect.py: the probe profile's visits rebuilt raw (no timing here; ``--live`` times things)."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = ROOT / "profiles" / "amd-epyc-f26m2-2c_torch-2.13_t1"  # measured with the probe (2026-12-06)
ORT = ROOT / "profiles" / "amd-epyc-f26m2-2c_ort-1.31_t1"  # measured before it


def probe_copy(tmp_path: Path, factor: float) -> Path:
    """The shipped torch profile with every visit's probe at ``factor`` x the reference."""
    dest = tmp_path / TORCH.name
    dest.mkdir()
    for name in ("profile.json", "ops.csv", "e2e.csv", "visits.csv"):
        shutil.copy(TORCH / name, dest / name)
    ref = json.loads((dest / "profile.json").read_text())["probe"]["reference_ms"]
    v = pd.read_csv(dest / "visits.csv")
    v["probe_ms"] = ref * factor
    v.to_csv(dest / "visits.csv", index=False)
    return dest


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_raw_rows_are_the_visits_medians_times_the_probe(tmp_path, benchmark_module, factor):
    from latency.profile_data import read_profile

    pe = benchmark_module("probe_effect")
    src = read_profile(probe_copy(tmp_path, factor))
    dst = tmp_path / "raw"
    dst.mkdir()
    pe.raw_copy(src, dst)
    for name, key in (("ops.csv", "op_key"), ("e2e.csv", "arch_json")):
        a = pd.read_csv(src.path / name, keep_default_na=False).set_index([key, "batch", "seq_len"])
        b = pd.read_csv(dst / name, keep_default_na=False).set_index([key, "batch", "seq_len"])
        assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
        ratio = b["latency_p50_ms"] / a["latency_p50_ms"]
        assert ratio.median() == pytest.approx(factor, rel=1e-3)  # each row: the median of its scaled visits
        assert ((ratio - factor).abs() <= 1e-3 * factor + 1e-6 / a["latency_p50_ms"]).mean() > 0.99
    figs = pe.visit_figures(src)
    assert figs["probe_vs_reference_quantiles"][0.5] == pytest.approx(factor)
    assert figs["raw"]["retest_median_abs_diff_pct"] == pytest.approx(figs["scaled"]["retest_median_abs_diff_pct"],
                                                                      abs=0.01)


def test_a_profile_without_a_probe_or_missing_is_one_line(tmp_path, benchmark_module):
    pe = benchmark_module("probe_effect")
    with pytest.raises(SystemExit, match="measured without a probe"):
        pe.main(["--profile", str(ORT), "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="probe_effect.py: .*nosuch"):
        pe.main(["--profile", str(tmp_path / "nosuch"), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_live_reports_each_models_spread_raw_and_over_each_probe(benchmark_module):
    """A few visits of two models (the numbers are this machine's; only their shape is checked here)."""
    import math

    from latency.profile_data import read_profile

    pe = benchmark_module("probe_effect")
    out = pe.live(read_profile(TORCH), 2, 3, seed=0)
    assert [m["space"] for m in out["models"]] == ["adabert", "nasbert"] and out["rounds"] == 3
    for m in out["models"]:
        assert m["context"] == "b1_s128" and m["model_ms"] > 0 and math.isfinite(m["slope_on_matmul"])
        assert all(m[f"spread_over_{k}_pct"] >= 0 for k in ("matmul", "relu_1mb", "conv1d"))
    assert set(out["summary"]) >= {"median_spread_raw_pct", "median_spread_over_matmul_pct", "median_slope_on_matmul"}
