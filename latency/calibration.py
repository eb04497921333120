"""Linear calibration of per-op costs on whole-model measurements.

A calibration layer turns per-op milliseconds (from the table or the regression) into *effective* per-op costs
that add up to what whole models measure, per space:

    op_eff(op, ctx)  = alpha(ctx) * op_ms(op, ctx) + beta_kind(op)(ctx)
    overhead(ctx)    = alpha(ctx) * previous_overhead(ctx) + gamma(ctx)

with ``alpha``, ``beta_k`` and ``gamma`` linear in a few smooth functions of the Context (``log batch``,
``log seq_len``, tokens), so they interpolate between Contexts. Being linear in the op bag, it keeps a model's
latency a sum over its ops: the loss's cost tensors and ``predict`` agree exactly. The coefficients are fitted by
ridge regression on relative errors, shrunk towards the identity (alpha = 1, beta = gamma = 0), with Huber
reweighting so that a disturbed measurement does not pull the fit, and the ridge chosen by cross-validation over
whole architectures.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latency.profile_data import PredictorError
from nas.spaces.ops import Context, OpSpec

BASES: dict[str, Callable[[Context], float]] = {
    "one": lambda c: 1.0,
    "log_batch": lambda c: math.log(c.batch),
    "log_seq_len": lambda c: math.log(c.seq_len),
    "log_tokens": lambda c: math.log(c.tokens),
    "ktokens": lambda c: c.tokens / 1000.0,
}


def _basis(names: list[str], ctx: Context) -> np.ndarray:
    return np.array([BASES[n](ctx) for n in names])


@dataclass
class CalibrationSpec:
    """How a layer is shaped and regularised (stored with it)."""

    alpha: tuple[str, ...] = ("one", "log_batch", "log_seq_len")  # basis of the multiplicative correction
    beta: tuple[str, ...] = ("one", "ktokens")  # basis of the per-op-kind additive correction
    gamma: tuple[str, ...] = ("one", "ktokens")  # basis of the per-model additive correction
    per_kind: bool = True  # fit beta per op kind (False: no beta at all)
    ridge: float | None = None  # shrinkage towards the identity per row on standardised columns (None: by CV)


RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # candidates of the cross-validated ridge
FULL = CalibrationSpec()
FEW_SHOT = CalibrationSpec(alpha=("one", "log_tokens"), beta=(), gamma=("one",), per_kind=False)


@dataclass
class Row:
    """One whole-model measurement, as the fit sees it."""

    space: str  # space name
    ctx: Context
    bag: Counter  # OpSpec -> count
    measured_ms: float
    group: str = ""  # the architecture (rows of one architecture are held out together in cross-validation)


@dataclass
class Calibration:
    """A fitted layer: coefficients per space."""

    role: str  # "calibration" (on the profile's own e2e rows) or "transfer" (few-shot, another device)
    spec: CalibrationSpec
    coef: dict[str, dict]  # space -> {"alpha": [...], "beta": {kind: [...]}, "gamma": [...], "rows": n}

    def _space(self, space: str) -> dict:
        try:
            return self.coef[space]
        except KeyError:
            raise PredictorError(f"the {self.role} layer has no coefficients for space {space!r}; refit with "
                                 f"e2e measurements of that space") from None

    def apply_ops(self, space: str, specs: list[OpSpec], ms: np.ndarray, ctx: Context) -> np.ndarray:
        """Effective cost ``(len(specs),)`` of each op from its previous-layer cost ``ms``."""
        c = self._space(space)
        alpha = float(np.dot(c["alpha"], _basis(list(self.spec.alpha), ctx)))
        b = _basis(list(self.spec.beta), ctx) if self.spec.beta else np.zeros(0)
        beta = np.array([float(np.dot(c["beta"][s.kind], b)) if s.kind in c["beta"] else 0.0 for s in specs])
        return alpha * ms + beta

    def apply_overhead(self, space: str, overhead_ms: float, ctx: Context) -> float:
        c = self._space(space)
        alpha = float(np.dot(c["alpha"], _basis(list(self.spec.alpha), ctx)))
        return alpha * overhead_ms + float(np.dot(c["gamma"], _basis(list(self.spec.gamma), ctx)))

    def to_dict(self) -> dict:
        s = self.spec
        return {"role": self.role, "form": "op_eff = alpha(ctx)*op_ms + beta_kind(ctx); overhead = "
                "alpha(ctx)*prev_overhead + gamma(ctx)", "alpha_basis": list(s.alpha), "beta_basis": list(s.beta),
                "gamma_basis": list(s.gamma), "per_kind": s.per_kind, "ridge": s.ridge, "coef": self.coef}

    @staticmethod
    def from_dict(d: dict) -> Calibration:
        unknown = [b for b in (*d["alpha_basis"], *d["beta_basis"], *d["gamma_basis"]) if b not in BASES]
        if unknown:
            raise PredictorError(f"predictor.json: unknown calibration basis {unknown}; refit with `hwnas fit`")
        spec = CalibrationSpec(tuple(d["alpha_basis"]), tuple(d["beta_basis"]), tuple(d["gamma_basis"]),
                               bool(d["per_kind"]), None if d["ridge"] is None else float(d["ridge"]))
        return Calibration(d["role"], spec, d["coef"])


PrevCost = Callable[[str, list[OpSpec], Context], np.ndarray]  # (space, specs, ctx) -> previous-layer op ms
PrevOverhead = Callable[[str, Context], float]


def fit_calibration(rows: list[Row], prev_ops: PrevCost, prev_overhead: PrevOverhead, spec: CalibrationSpec,
                    role: str = "calibration") -> Calibration:
    """Fit one layer per space on whole-model rows (ridge on relative error, shrunk to the identity).

    Args:
        rows: whole-model measurements (never the test split).
        prev_ops: the previous layer's per-op ms.
        prev_overhead: the previous layer's overhead ms.
        spec: bases and regularisation.
        role: stored label.
    Returns:
        The fitted layer.
    """
    if not rows:
        raise PredictorError("no calibration rows: the profile's e2e.csv has no 'calibration' split; run "
                             "`hwnas profile --e2e N` or fit `--kind lut`")
    coef: dict[str, dict] = {}
    for space in sorted({r.space for r in rows}):
        srows = [r for r in rows if r.space == space]
        kinds = sorted({s.kind for r in srows for s in r.bag})
        if spec.per_kind and spec.beta:
            # kinds whose count never varies are confounded with gamma: leave them out
            kinds = [k for k in kinds if len({sum(n for s, n in r.bag.items() if s.kind == k) for r in srows}) > 1]
        else:
            kinds = []
        na, nb, ng = len(spec.alpha), len(spec.beta), len(spec.gamma)
        x = np.zeros((len(srows), na + nb * len(kinds) + ng))  # (rows, params)
        y = np.array([r.measured_ms for r in srows])  # (rows,)
        cache: dict[tuple[Context, OpSpec], float] = {}
        for i, r in enumerate(srows):
            need = [s for s in r.bag if (r.ctx, s) not in cache]
            if need:
                cache.update({(r.ctx, s): float(v) for s, v in zip(need, prev_ops(space, need, r.ctx))})
            total = prev_overhead(space, r.ctx) + sum(n * cache[(r.ctx, s)] for s, n in r.bag.items())
            x[i, :na] = total * _basis(list(spec.alpha), r.ctx)
            for j, k in enumerate(kinds):
                count = sum(n for s, n in r.bag.items() if s.kind == k)
                x[i, na + j * nb: na + (j + 1) * nb] = count * _basis(list(spec.beta), r.ctx)
            x[i, na + nb * len(kinds):] = _basis(list(spec.gamma), r.ctx)
        theta0 = np.zeros(x.shape[1])
        theta0[0] = 1.0 if spec.alpha[0] == "one" else 0.0
        xw = x / y[:, None]  # relative error
        rw = 1.0 - xw @ theta0
        scale = np.sqrt((xw**2).mean(0))  # (params,)
        scale[scale == 0] = 1.0
        xs = xw / scale
        groups = [r.group for r in srows]
        lam = spec.ridge if spec.ridge is not None else _cv_ridge(xs, rw, groups)
        theta = theta0 + _ridge(xs, rw, lam) / scale
        coef[space] = {
            "alpha": [float(v) for v in theta[:na]],
            "beta": {k: [float(v) for v in theta[na + j * nb: na + (j + 1) * nb]] for j, k in enumerate(kinds)},
            "gamma": [float(v) for v in theta[na + nb * len(kinds):]],
            "rows": len(srows),
            "ridge": lam,
        }
    return Calibration(role, spec, coef)


HUBER = 0.05  # relative residual beyond which a row's weight falls off (a disturbed measurement)


def _ridge(xs: np.ndarray, r: np.ndarray, lam: float, iters: int = 8) -> np.ndarray:
    """Ridge solution of ``xs @ delta ~ r``, made robust by Huber reweighting (a few IRLS steps)."""
    w = np.ones(len(r))  # (rows,)
    reg = lam * len(r) * np.eye(xs.shape[1])
    for _ in range(iters):
        delta = np.linalg.solve((xs * w[:, None]).T @ xs + reg, (xs * w[:, None]).T @ r)
        res = np.abs(xs @ delta - r)
        w = np.minimum(1.0, HUBER / np.maximum(res, 1e-12))
    return delta


def _cv_ridge(xs: np.ndarray, r: np.ndarray, groups: list[str]) -> float:
    """The ridge of :data:`RIDGE_GRID` with the least held-out (Huber) relative error, holding out whole
    architectures (leave-one-out up to 12 of them, else 6 folds); the strongest when there is one architecture."""
    names = sorted(set(groups))
    if len(names) < 2:
        return RIDGE_GRID[-1]
    fold_of = {g: (i if len(names) <= 12 else i % 6) for i, g in enumerate(names)}
    folds = np.array([fold_of[g] for g in groups])
    best = (np.inf, RIDGE_GRID[-1])
    for lam in RIDGE_GRID:
        err = 0.0
        for f in np.unique(folds):
            tr, te = folds != f, folds == f
            delta = _ridge(xs[tr], r[tr], lam)
            res = np.abs(xs[te] @ delta - r[te])
            err += float(np.where(res <= HUBER, res**2 / 2, HUBER * (res - HUBER / 2)).sum())  # Huber loss
        if err < best[0] * (1 - 1e-9):
            best = (err, lam)
    return best[1]
