"""benchmarks/process_states.py: the per-entry summary over processes and its bad-input lines (no timing here)."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "process_states.py"


def test_summary_flags_the_slow_process_and_compares_its_two_objects(benchmark_module):
    ps = benchmark_module("process_states")
    fast = [{"op@32x128#a": 1.00 + i / 1000, "op@32x128#b": 1.01 + i / 1000} for i in range(9)]
    slow = {"op@32x128#a": 1.80, "op@32x128#b": 1.82}  # one process in a slow state, both objects alike
    (row,) = ps.summarise(fast + [slow])
    assert row["entry"] == "op@32x128" and row["processes"] == 10
    assert row["share_10pct_slower"] == row["share_25pct_slower"] == 0.1
    assert row["slowest_over_median"] == pytest.approx(1.81 / 1.0095, abs=1e-3)
    assert row["objects_gap_max_pct"] == pytest.approx(100 * 0.02 / 1.80, abs=0.01)  # the slow process: 1.1 %
    assert len(row["per_process_ms"]) == 10


@pytest.mark.parametrize("argv, says", [(["--processes", "1"], "at least 2"),
                                        (["--contexts", "32by128"], "BATCHxSEQ_LEN"),
                                        (["--ops", "--e2e", "0"], "nothing to time"),
                                        (["--e2e", "-1"], "0 or more")])
def test_bad_arguments_are_one_line(argv, says):
    out = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert out.returncode != 0
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1
