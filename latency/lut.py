"""The lookup table: each op's measured milliseconds over the Context grid, interpolated between grid points.

Between grid points the table interpolates log(ms) linearly in (log batch, log seq_len) (bilinear); outside the
grid it extends the nearest segment's slope (the caller warns, see :mod:`latency.predictor`). With a single grid
value along an axis, ms is taken as proportional to that axis.

>>> import pandas as pd
>>> df = pd.DataFrame({"op_key": ["identity|h=8"] * 2, "batch": [1, 1], "seq_len": [32, 128],
...                    "latency_p50_ms": [0.1, 0.4]})
>>> t = OpTable.from_frame(df)
>>> round(float(t.ms(["identity|h=8"], 1, 64)[0]), 6)
0.2
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latency.profile_data import PredictorError

MIN_MS = 1e-6  # floor before taking logs (an op that measures as nothing)


def _axis_weights(grid: list[int], x: float) -> tuple[int, int, float]:
    """Segment (i, j) of ``grid`` around ``x`` and the position ``t`` of log x in it (t outside [0, 1] extrapolates)."""
    if len(grid) == 1:
        return 0, 0, 0.0
    lg = [math.log(g) for g in grid]
    lx = math.log(x)
    i = 0
    while i < len(grid) - 2 and lx > lg[i + 1]:
        i += 1
    return i, i + 1, (lx - lg[i]) / (lg[i + 1] - lg[i])


@dataclass
class OpTable:
    """Per-op p50 ms on a rectangular (batch x seq_len) grid."""

    batch: list[int]  # grid batch sizes, ascending
    seq_len: list[int]  # grid sequence lengths, ascending
    table: dict[str, list[list[float]]]  # op key -> [batch index][seq index] -> p50 ms

    def __post_init__(self) -> None:
        self._log = {k: np.log(np.maximum(np.asarray(v, dtype=np.float64), MIN_MS)) for k, v in self.table.items()}

    @staticmethod
    def from_frame(ops: pd.DataFrame, source: str = "ops.csv") -> OpTable:
        """Build from ``ops.csv`` rows; every op must be measured at every grid point (repeats are averaged)."""
        batch = sorted(int(b) for b in ops["batch"].unique())
        seq = sorted(int(s) for s in ops["seq_len"].unique())
        piv = ops.groupby(["op_key", "batch", "seq_len"])["latency_p50_ms"].mean()
        table: dict[str, list[list[float]]] = {}
        for key in sorted(ops["op_key"].unique()):
            rows = []
            for b in batch:
                row = []
                for s in seq:
                    try:
                        row.append(float(piv.loc[(key, b, s)]))
                    except KeyError:
                        raise PredictorError(
                            f"{source}: op {key!r} has no measurement at batch {b}, seq_len {s}; the table is "
                            f"incomplete - re-run the same `hwnas profile` command to resume it") from None
                rows.append(row)
            table[key] = rows
        return OpTable(batch, seq, table)

    def to_dict(self) -> dict:
        return {"batch": self.batch, "seq_len": self.seq_len, "ms": self.table}

    @staticmethod
    def from_dict(d: dict) -> OpTable:
        return OpTable([int(b) for b in d["batch"]], [int(s) for s in d["seq_len"]],
                       {k: [[float(x) for x in r] for r in v] for k, v in d["ms"].items()})

    def keys(self) -> set[str]:
        return set(self.table)

    def ms(self, keys: list[str], batch: int, seq_len: int) -> np.ndarray:
        """Interpolated p50 ms of each op key at (batch, seq_len): array ``(len(keys),)``."""
        bi, bj, bt = _axis_weights(self.batch, batch)
        si, sj, st = _axis_weights(self.seq_len, seq_len)
        out = np.empty(len(keys))
        for n, key in enumerate(keys):
            lv = self._log.get(key)
            if lv is None:
                raise PredictorError(f"op {key!r} is not in the profile's table; profile this space and preset "
                                     f"(`hwnas profile --space ... --preset ...`) or use `--kind regression`")
            v = ((1 - bt) * (1 - st) * lv[bi, si] + bt * (1 - st) * lv[bj, si]
                 + (1 - bt) * st * lv[bi, sj] + bt * st * lv[bj, sj])
            out[n] = v
        out = np.exp(out)
        if len(self.batch) == 1:
            out *= batch / self.batch[0]
        if len(self.seq_len) == 1:
            out *= seq_len / self.seq_len[0]
        return out
