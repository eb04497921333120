"""Statistics of timings, on saved numbers (no measuring here)."""
import math

import numpy as np
import pytest

from latency.stats import (
    LEGACY,
    Protocol,
    as_array,
    combine_visits,
    cv,
    next_chunk,
    retest_agreement,
    rse_median,
    stop_reason,
    summarize,
    wants_retake,
)

# 40 saved timings (s) of ffn:inner=1024|h=256 at b8_s128 on onnxruntime, one thread; two slow outliers
SAVED_S = [
    0.008297, 0.008236, 0.008469, 0.008301, 0.008288, 0.008312, 0.008275, 0.008259, 0.008301, 0.008330,
    0.008281, 0.008266, 0.008290, 0.008305, 0.008322, 0.008270, 0.008299, 0.008284, 0.008318, 0.008262,
    0.008291, 0.008279, 0.008307, 0.008295, 0.008288, 0.008314, 0.008271, 0.008302, 0.008296, 0.008283,
    0.008293, 0.008287, 0.008300, 0.008289, 0.008310, 0.008277, 0.008298, 0.008286, 0.012500, 0.015100,
]


def test_summarize_saved_numbers():
    s = summarize(SAVED_S)
    x = np.array(SAVED_S) * 1e3
    assert s["n_runs"] == 40
    assert s["latency_p50_ms"] == pytest.approx(np.median(x), abs=1e-6)
    assert s["latency_p10_ms"] == pytest.approx(np.percentile(x, 10), abs=1e-6)
    assert s["latency_p90_ms"] == pytest.approx(np.percentile(x, 90), abs=1e-6)
    assert s["latency_p10_ms"] <= s["latency_p50_ms"] <= s["latency_p90_ms"]
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x), rel=1e-4)
    assert set(s) == {"latency_p50_ms", "latency_p10_ms", "latency_p90_ms", "cv", "n_runs", "rse", "mean_ms", "sd_ms"}


def test_summarize_exact_small_case():
    s = summarize([0.001, 0.002, 0.003, 0.004, 0.005])
    assert (s["latency_p10_ms"], s["latency_p50_ms"], s["latency_p90_ms"]) == (1.4, 3.0, 4.6)


def test_cv_and_empty_input():
    assert cv([0.002]) == 0.0
    assert cv([1.0, 1.0, 1.0]) == 0.0
    assert cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    with pytest.raises(ValueError):
        as_array([])


def test_rse_methods_agree_on_normal_samples():
    x = np.random.default_rng(0).normal(10.0, 0.5, size=400)
    expected = 1.2533 * 0.5 / math.sqrt(400) / 10.0
    for method in ("mad", "sd", "bootstrap"):
        assert rse_median(x, method) == pytest.approx(expected, rel=0.25), method
    assert rse_median([1.0]) == math.inf
    with pytest.raises(ValueError, match="unknown rse method"):
        rse_median(x, "nope")


def test_mad_rse_is_robust_to_outliers():
    # the two outliers inflate the sd-based error but not the MAD-based one
    assert rse_median(SAVED_S, "mad") < 0.002
    assert rse_median(SAVED_S, "sd") > 3 * rse_median(SAVED_S, "mad")


def test_bootstrap_is_deterministic_for_a_seed():
    assert rse_median(SAVED_S, "bootstrap", seed=3) == rse_median(SAVED_S, "bootstrap", seed=3)


def test_stop_rule():
    p = Protocol(min_runs=5, cap_min_runs=3, max_runs=50, target_rse=0.01, time_cap_s=1.0)
    stable = [1.0, 1.001, 0.999, 1.0, 1.002]
    noisy = [1.0, 1.5, 0.6, 1.3, 0.8, 1.2]
    assert stop_reason(stable[:4], 0.0, p) is None  # min_runs first, however stable
    assert stop_reason(stable, 0.0, p) == "stable"
    assert stop_reason(noisy, 0.5, p) is None  # not stable, time left
    assert stop_reason(noisy, 1.0, p) == "time_cap"
    assert stop_reason(noisy, 5.0, p, time_cap_s=10.0) is None  # a per-call cap (e2e) overrides
    assert stop_reason(noisy * 10, 0.0, p) == "max_runs"
    # slow entries: past the cap, cap_min_runs runs are enough; never fewer
    assert stop_reason([0.4, 0.41], 0.81, p) is None
    assert stop_reason([0.4, 0.41, 0.4], 1.21, p) == "time_cap"
    assert stop_reason([0.1, 0.11, 0.1], 0.31, p) is None


def test_next_chunk_doubles_within_the_cap():
    p = Protocol(min_runs=5, cap_min_runs=3, max_runs=100, time_cap_s=1.0)
    assert next_chunk([], 0.0, p) == 3
    assert next_chunk([0.001] * 3, 0.0, p) == 2
    assert next_chunk([0.4] * 3, 1.2, p) == 1  # past the cap: one at a time until the rule stops it
    assert next_chunk([0.001] * 10, 0.0, p) == 10  # doubling
    assert next_chunk([0.1] * 10, 0.75, p) == 3  # 0.25 s left at 0.1 s per run
    assert next_chunk([0.001] * 90, 0.0, p) == 10  # max_runs
    assert next_chunk([0.5] * 10, 2.0, p) == 1


def test_retest_agreement():
    r = retest_agreement([1.0, 2.0, 4.0, 10.0], [1.01, 1.9, 4.0, 10.3])
    assert r["n"] == 4
    assert r["median_abs_diff_pct"] == pytest.approx(2.0)  # 1, 5, 0, 3 -> median 2
    assert r["max_abs_diff_pct"] == pytest.approx(5.0)
    assert r["within_2pct"] == 0.5
    with pytest.raises(ValueError):
        retest_agreement([1.0], [1.0, 2.0])


def test_protocol_round_trip_ignores_unknown_fields():
    p = Protocol(min_runs=7, seed=3)
    assert Protocol.from_dict({**p.to_dict(), "future_field": 1}) == p
    assert {"warmup_runs", "warmup_min_s", "min_runs", "max_runs", "target_rse", "time_cap_s", "statistic",
            "order", "seed"} <= set(p.to_dict())


def test_combine_visits_outvotes_a_spoiled_visit_and_pools_the_cv():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.010, 0.0002, 30), rng.normal(0.0102, 0.0002, 40)
    spoiled = rng.normal(0.022, 0.0002, 10)  # a burst of load: the whole visit 2.2x slower
    c = combine_visits([summarize(a), summarize(spoiled), summarize(b)])
    assert 10.0 <= c["latency_p50_ms"] <= 10.3  # not dragged towards 22 ms
    assert c["latency_p10_ms"] <= c["latency_p50_ms"] <= c["latency_p90_ms"]
    assert c["n_runs"] == 80 and c["visits"] == 3 and c["visit_spread"] > 1.0
    pooled = np.concatenate([a, spoiled, b]) * 1e3
    assert c["cv"] == pytest.approx(pooled.std(ddof=1) / pooled.mean(), rel=1e-3)  # exact pooling
    one = combine_visits([summarize(a)])
    assert one["latency_p50_ms"] == summarize(a)["latency_p50_ms"] and one["visit_spread"] == 0.0
    with pytest.raises(ValueError):
        combine_visits([])


def test_whole_models_follow_their_own_visit_rules_and_old_profiles_keep_theirs():
    p = Protocol()
    e2e = p.for_kind("e2e")
    assert (e2e.warmup_runs, e2e.warmup_min_s, e2e.min_runs, e2e.time_cap_s) == (
        p.e2e_warmup_runs, p.e2e_warmup_min_s, p.e2e_min_runs, p.e2e_time_cap_s)
    assert p.for_kind("op") == p
    old = {k: v for k, v in p.to_dict().items() if k not in LEGACY}  # a profile written before these fields
    legacy = Protocol.from_dict({**old, "warmup_runs": 1, "min_runs": 5})
    assert (legacy.e2e_warmup_runs, legacy.e2e_min_runs, legacy.max_visits, legacy.retest) == (1, 5, 0, "after")
    assert not wants_retake([1.0, 2.0, 3.0], legacy)  # no retakes: the old rule


def test_retake_rule():
    p = Protocol(visits=3, max_visits=5, retake_spread=0.05)
    assert not wants_retake([1.0, 1.5], p)  # visits still to come
    assert not wants_retake([1.0, 1.02, 1.5], p)  # one disturbed visit is outvoted
    assert wants_retake([1.0, 1.1, 1.2], p)  # no two agree: another visit
    assert wants_retake([1.0, 1.1, 1.2, 1.11], p)  # 2 of 4 agree: not a majority
    assert not wants_retake([1.0, 1.1, 1.2, 1.11, 1.1], p)  # 5 visits: the most
    assert wants_retake([1.0, 1.12, 1.3, 1.5], p) and not wants_retake([1.0, 1.12, 1.3, 1.5, 1.7], p)  # at most 5


def test_at_reference_scales_milliseconds_only_and_a_profile_before_the_probe_had_none():
    from latency.stats import at_reference

    v = {"latency_p50_ms": 3.0, "latency_p10_ms": 2.7, "latency_p90_ms": 3.6, "mean_ms": 3.1, "sd_ms": 0.3,
         "cv": 0.1, "rse": 0.01, "n_runs": 12, "probe_ms": 0.3}
    s = at_reference(v, 0.2)  # the machine ran 1.5x slower than at the reference
    assert s["latency_p50_ms"] == 2.0 and s["latency_p90_ms"] == 2.4 and s["sd_ms"] == 0.2
    assert {k: s[k] for k in ("cv", "rse", "n_runs", "probe_ms")} == {"cv": 0.1, "rse": 0.01, "n_runs": 12,
                                                                       "probe_ms": 0.3}
    assert at_reference(v, 0.3) == v
    for bad in (0.0, float("nan")):
        with pytest.raises(ValueError, match="must be positive"):
            at_reference({**v, "probe_ms": bad}, 0.2)
    assert Protocol.from_dict({}).probe == "none" and Protocol().probe == "matmul"
