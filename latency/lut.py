"""The lookup table: each op's measured milliseconds over the Context grid, interpolated between grid points.

Between grid points (``interp="shape"``, the default) each op follows a small physical model fitted to its own
row of the table, ``ms ~ c0 + c1 b + c2 b s + c3 b s^2`` (launch cost, per-sequence work, per-token work,
attention; non-negative least squares on relative error), times the table's own residual ratio interpolated
bilinearly in (log batch, log seq_len): exact at grid points, shaped like the op between them, and following the
model (residual held at the nearest grid value) outside the grid, where the caller warns
(:mod:`latency.predictor`). ``interp="loglog"`` interpolates log(ms) bilinearly and extends the nearest segment.

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
    interp: str = "shape"  # "shape" (physical model x interpolated residual) or "loglog" (bilinear in log-log)

    def __post_init__(self) -> None:
        if self.interp not in ("shape", "loglog"):
            raise PredictorError(f"unknown table interpolation {self.interp!r}; use 'shape' or 'loglog'")
        self._log = {k: np.log(np.maximum(np.asarray(v, dtype=np.float64), MIN_MS)) for k, v in self.table.items()}
        self._shape: dict[str, np.ndarray] = {}
        if self.interp == "shape":
            for k, v in self.table.items():
                self._shape[k] = _shape_coef(self.batch, self.seq_len, np.asarray(v, dtype=np.float64))

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
        return {"batch": self.batch, "seq_len": self.seq_len, "ms": self.table, "interp": self.interp,
                "shape_basis": list(SHAPE_BASIS)}

    @staticmethod
    def from_dict(d: dict) -> OpTable:
        if d.get("interp", "loglog") == "shape" and list(d.get("shape_basis", [])) != list(SHAPE_BASIS):
            raise PredictorError("predictor.json: the table's interpolation model differs from this hwnas version; "
                                 "refit with `hwnas fit PROFILE`")
        return OpTable([int(b) for b in d["batch"]], [int(s) for s in d["seq_len"]],
                       {k: [[float(x) for x in r] for r in v] for k, v in d["ms"].items()}, d.get("interp", "loglog"))

    def keys(self) -> set[str]:
        return set(self.table)

    def ms(self, keys: list[str], batch: int, seq_len: int) -> np.ndarray:
        """Interpolated p50 ms of each op key at (batch, seq_len): array ``(len(keys),)``."""
        bi, bj, bt = _axis_weights(self.batch, batch)
        si, sj, st = _axis_weights(self.seq_len, seq_len)
        if self.interp == "shape":  # residual ratio held at the nearest grid value outside the grid
            bt, st = min(max(bt, 0.0), 1.0), min(max(st, 0.0), 1.0)
        out = np.empty(len(keys))
        for n, key in enumerate(keys):
            lv = self._log.get(key)
            if lv is None:
                raise PredictorError(f"op {key!r} is not in the profile's table; profile this space and preset "
                                     f"(`hwnas profile --space ... --preset ...`) or use `--kind regression`")
            coef = self._shape.get(key)
            if coef is not None:
                lv = lv - np.log(self._model_grid(coef))
            v = ((1 - bt) * (1 - st) * lv[bi, si] + bt * (1 - st) * lv[bj, si]
                 + (1 - bt) * st * lv[bi, sj] + bt * st * lv[bj, sj])
            out[n] = np.exp(v) * (_shape_basis(batch, seq_len) @ coef if coef is not None else 1.0)
        if self.interp == "loglog":
            if len(self.batch) == 1:
                out *= batch / self.batch[0]
            if len(self.seq_len) == 1:
                out *= seq_len / self.seq_len[0]
        return out

    def _model_grid(self, coef: np.ndarray) -> np.ndarray:
        return np.array([[_shape_basis(b, s) @ coef for s in self.seq_len] for b in self.batch])  # (nb, ns)


SHAPE_BASIS = ("1", "b", "b*s", "b*s^2")  # the per-op model's terms: launch, per sequence, per token, attention


def _shape_basis(b: float, s: float) -> np.ndarray:
    return np.array([1.0, b, b * s, b * s * s])


def _shape_coef(batch: list[int], seq: list[int], ms: np.ndarray) -> np.ndarray | None:
    """Non-negative coefficients of the per-op model over the grid (relative least squares); None if degenerate."""
    from scipy.optimize import nnls

    a = np.array([_shape_basis(b, s) for b in batch for s in seq])  # (cells, 4)
    y = np.maximum(ms.reshape(-1), MIN_MS)  # (cells,)
    scale = np.abs(a / y[:, None]).max(0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(a / y[:, None] / scale, np.ones(len(y)))
    coef = coef / scale
    if not (_shape_basis(batch[0], seq[0]) @ coef > 0):
        return None
    return coef
