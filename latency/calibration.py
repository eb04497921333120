"""Linear calibration of per-op costs on whole-model measurements.

A calibration layer turns per-op milliseconds (from the table or the regression) into *effective* per-op costs
that add up to what whole models measure, per space:

    op_eff(op, ctx)  = max(0, alpha(ctx) * op_ms(op, ctx) + eta(ctx) * harness_ms(op, ctx) + beta_kind(op)(ctx))
    overhead(ctx, W) = alpha(ctx) * previous_overhead(ctx, W) + gamma(ctx) + max(0, s(ctx)) * max(0, W - knee)

where ``harness_ms(op)`` is the table's ``identity`` entry at the op's width: what timing an op on its own costs
beyond the op (binding inputs, fetching the output), which a whole model does not pay per op. The coefficients
``alpha``, ``eta``, ``beta_k`` and ``gamma`` are linear in a few functions of the Context: by default ``alpha`` is a
common level plus one bilinear "hat" function per grid Context (in log batch, log seq_len), so each measured
Context gets its own correction and Contexts between them interpolate; ``eta``, each ``beta_k`` and ``gamma`` are
constants. (Per-kind terms growing with tokens fit random architectures as well but extrapolate badly to the
homogeneous ones a budgeted search finds, e.g. eight separable convolutions.) Being linear in the op bag (but for
the cold-weights term below), it keeps a model's latency a sum over its ops: the loss's cost tensors and ``predict``
agree exactly. The coefficients are fitted by
ridge regression on relative errors, shrunk towards the identity (alpha = 1, beta = gamma = 0), with Huber
reweighting so that a disturbed measurement does not pull the fit, and the ridge chosen by cross-validation over
whole architectures, then raised until no calibration row, and not the fastest architecture of the space at any
grid Context, is predicted at or below zero. The overhead may be negative (the table's entries each carry the
timing harness's own cost, which a whole model pays once); an op whose effective cost comes out negative is
clamped to zero so that the search never sees an op as a way to gain time.

The last term is the one part that is not a sum over ops: ``W`` is the MB of weights the model reads per run
(:func:`weights_mb`; a lookup table's word rows are not read whole). The table times each op alone, run after run,
so its weights stay in cache; a model reads all its layers' weights once per run, and once they outgrow what the
cache holds for it, its ops wait on memory (``benchmarks/cold_weights.py``: eight FFN layers with 16.8 MB of distinct
weights ran up to 17 % slower than one layer called eight times). The knee is chosen per space by the same
cross-validation, among those of :data:`KNEES_MB` with at least :data:`MIN_BEYOND_KNEE` calibration architectures
beyond them, or none; its slope ``s(ctx)`` is linear in ``log_tokens``, sign and all left to the fit. The cost
model carries it exactly (``latency.loss.ColdTerm``): a hinge in the expected weights.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latency.profile_data import PredictorError
from latency.stats import rse_median
from nas.spaces.ops import Context, OpSpec, weights_mb

BASES: dict[str, Callable[[Context], float]] = {
    "one": lambda c: 1.0,
    "log_batch": lambda c: math.log(c.batch),
    "log_seq_len": lambda c: math.log(c.seq_len),
    "log_tokens": lambda c: math.log(c.tokens),
    "ktokens": lambda c: c.tokens / 1000.0,
    "log_batch_sq": lambda c: math.log(c.batch) ** 2,
    "log_seq_len_sq": lambda c: math.log(c.seq_len) ** 2,
    "log_batch_x_seq_len": lambda c: math.log(c.batch) * math.log(c.seq_len),
}


def _hat(grid: tuple[tuple[int, ...], tuple[int, ...]], ctx: Context) -> np.ndarray:
    """Bilinear weights (in log batch, log seq_len) of ``ctx`` on the grid's Contexts; the nearest edge outside."""
    from latency.lut import _axis_weights

    gb, gs = grid
    w = np.zeros((len(gb), len(gs)))
    bi, bj, bt = _axis_weights(list(gb), ctx.batch)
    si, sj, st = _axis_weights(list(gs), ctx.seq_len)
    bt, st = min(max(bt, 0.0), 1.0), min(max(st, 0.0), 1.0)
    for i, wi in ((bi, 1 - bt), (bj, bt)):
        for j, wj in ((si, 1 - st), (sj, st)):
            w[i, j] += wi * wj
    return w.reshape(-1)


def _basis(names, ctx: Context, grid=None) -> np.ndarray:
    """Basis values at ``ctx``; ``hat`` expands to one bilinear hat function per grid Context."""
    parts = []
    for n in names:
        if n == "hat":
            if grid is None:
                raise PredictorError("calibration basis 'hat' needs the Context grid; refit with `hwnas fit`")
            parts.append(_hat(grid, ctx))
        else:
            parts.append(np.array([BASES[n](ctx)]))
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass
class CalibrationSpec:
    """How a layer is shaped and regularised (stored with it)."""

    alpha: tuple[str, ...] = ("one", "hat")  # basis of the multiplicative correction
    beta: tuple[str, ...] = ("one",)  # basis of the per-op-kind additive correction (a constant per op run)
    gamma: tuple[str, ...] = ("one",)  # basis of the per-model additive correction (per-token terms belong to ops)
    per_kind: bool = True  # fit beta per op kind (False: one beta shared by every op, key "*")
    ridge: float | None = None  # shrinkage towards the identity per row on standardised columns (None: by CV)
    grid: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (batch, seq_len) grid of the 'hat' basis
    harness: tuple[str, ...] = ("one",)  # basis of eta, the weight of each op's harness cost (() = off)
    harness_kind: str = "identity"  # the op kind whose table entry measures the harness at a width
    kind_scale: bool = False  # one more multiplicative term per op kind (the kinds that get a beta), constant in ctx
    free: tuple[str, ...] = ("identity",)  # op kinds that are no node of an exported model: their effective cost is
    # zero (their table entry is the timing harness alone); () in layers fitted before this field existed
    cold: tuple[str, ...] = ()  # basis of the cold-weights slope (ms per MB read beyond the knee); () = off
    knees: tuple[float, ...] = ()  # candidate knees (MB of weights read per run); cross-validation picks one or none


RIDGE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)  # candidates of the cross-validated ridge (below 1e-3 it overfits 8 architectures)
KNEES_MB = (4.0, 6.0, 8.0, 10.0, 12.0, 16.0)  # candidate knees of the cold-weights term
MIN_BEYOND_KNEE = 3  # architectures a knee needs beyond it to be a candidate (cross-validation holds out one at a time)
FULL = CalibrationSpec(kind_scale=True, cold=("one", "log_tokens"), knees=KNEES_MB)  # per-kind scales and a cold-
# weights term where cross-validation prefers them (per space)
FEW_SHOT = CalibrationSpec(alpha=("one", "log_batch", "log_seq_len"), beta=("one",), gamma=("one",), per_kind=False,
                           harness=())
ALL_KINDS = "*"  # the beta key shared by every op when not per kind


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

    def needs_harness(self, space: str) -> bool:
        return bool(self._space(space).get("eta"))

    def harness_specs(self, specs: list[OpSpec]) -> list[OpSpec]:
        """The ops whose previous-layer cost is each op's harness cost (``identity`` at the op's width)."""
        return [OpSpec.make(self.spec.harness_kind, s.hidden) for s in specs]

    def apply_ops(self, space: str, specs: list[OpSpec], ms: np.ndarray, ctx: Context,
                  harness_ms: np.ndarray | None = None) -> np.ndarray:
        """Effective cost ``(len(specs),)`` of each op from its previous-layer cost ``ms`` (and harness cost)."""
        c = self._space(space)
        g = self.spec.grid
        alpha = float(np.dot(c["alpha"], _basis(self.spec.alpha, ctx, g)))
        b = _basis(self.spec.beta, ctx, g)
        betas = c["beta"]
        beta = np.array([float(np.dot(betas[k], b)) if (k := s.kind if s.kind in betas else ALL_KINDS) in betas
                         else 0.0 for s in specs])
        scale = c.get("scale") or {}
        out = (alpha + np.array([scale.get(s.kind, 0.0) for s in specs])) * ms + beta
        if c.get("eta"):
            if harness_ms is None:  # pragma: no cover - a caller bug
                raise PredictorError("calibration needs the harness cost of each op")
            out = out + float(np.dot(c["eta"], _basis(self.spec.harness, ctx, g))) * harness_ms
        out = np.where([sp.kind in self.spec.free for sp in specs], 0.0, out)
        return np.maximum(out, 0.0) * self.level(space, ctx)  # never negative, even far from the fitted Contexts

    def apply_overhead(self, space: str, overhead_ms: float, ctx: Context, weights_mb: float = 0.0) -> float:
        """The per-model cost from the previous layer's (``weights_mb``: MB of weights the model reads per run)."""
        c = self._space(space)
        g = self.spec.grid
        alpha = float(np.dot(c["alpha"], _basis(self.spec.alpha, ctx, g)))
        out = alpha * overhead_ms + float(np.dot(c["gamma"], _basis(self.spec.gamma, ctx, g)))
        cold = c.get("cold")
        if cold:
            out += cold_slope(cold["slope"], self.spec.cold, ctx, g) * max(0.0, weights_mb - cold["knee_mb"])
        return out * self.level(space, ctx)

    def level(self, space: str, ctx: Context) -> float:
        """The layer's per-Context level at ``ctx`` (:func:`fit_levels`): 1 where it has none, between the grid's
        Contexts the bilinear hats' mix (in log batch, log seq_len), the nearest edge outside."""
        values = self._space(space).get("level")
        return 1.0 if not values else float(np.dot(values, _hat(self.spec.grid, ctx)))

    def knee_mb(self, space: str) -> float | None:
        """Where this layer's cold-weights term starts for ``space`` (None: it has none)."""
        cold = self._space(space).get("cold")
        return float(cold["knee_mb"]) if cold else None

    def to_dict(self) -> dict:
        s = self.spec
        return {"role": self.role, "form": "op_eff = max(0, alpha(ctx)*op_ms + eta(ctx)*harness_ms + beta_kind(ctx));"
                " overhead = alpha(ctx)*prev_overhead(W) + gamma(ctx) + max(0, cold.slope . cold_basis(ctx)) * max(0, W -"
                " cold.knee_mb), W = MB of weights the model reads per run; both x level(ctx) where fitted (hats over the grid)",
                "alpha_basis": list(s.alpha),
                "harness_basis": list(s.harness), "harness_kind": s.harness_kind, "beta_basis": list(s.beta),
                "gamma_basis": list(s.gamma), "per_kind": s.per_kind, "kind_scale": s.kind_scale, "ridge": s.ridge,
                "grid": [list(x) for x in s.grid] if s.grid else None, "free_kinds": list(s.free),
                "cold_basis": list(s.cold), "knees_mb": list(s.knees), "coef": self.coef}

    @staticmethod
    def from_dict(d: dict) -> Calibration:
        names = (*d["alpha_basis"], *d["beta_basis"], *d["gamma_basis"], *d.get("harness_basis", ()),
                 *d.get("cold_basis", ()))
        unknown = [b for b in names if b not in BASES and b != "hat"]
        if unknown:
            raise PredictorError(f"predictor.json: unknown calibration basis {unknown}; refit with `hwnas fit`")
        spec = CalibrationSpec(tuple(d["alpha_basis"]), tuple(d["beta_basis"]), tuple(d["gamma_basis"]),
                               bool(d["per_kind"]), None if d["ridge"] is None else float(d["ridge"]),
                               tuple(tuple(int(v) for v in x) for x in d["grid"]) if d.get("grid") else None,
                               tuple(d.get("harness_basis", ())), d.get("harness_kind", "identity"),
                               bool(d.get("kind_scale", False)), tuple(d.get("free_kinds", ())),
                               tuple(d.get("cold_basis", ())), tuple(float(v) for v in d.get("knees_mb", ())))
        cells = len(spec.grid[0]) * len(spec.grid[1]) if spec.grid else 0
        for space, c in d["coef"].items():  # checked here, since it is read only when a heavy model is priced
            level = c.get("level")
            if level is not None and not (isinstance(level, list) and len(level) == cells > 0 and
                                          all(isinstance(v, (int, float)) and v > 0 for v in level)):
                raise PredictorError(f"predictor.json: malformed per-Context level of space {space!r} (needs "
                                     f"{cells} positive values, one per grid Context); refit with `hwnas fit`")
            cold = c.get("cold")
            if cold is not None and not (isinstance(cold, dict) and isinstance(cold.get("knee_mb"), (int, float))
                                         and len(cold.get("slope") or ()) == len(spec.cold) > 0):
                raise PredictorError(f"predictor.json: malformed cold-weights term of space {space!r} (needs "
                                     f"knee_mb and {len(spec.cold)} slope values); refit with `hwnas fit`")
        return Calibration(d["role"], spec, d["coef"])


PrevCost = Callable[[str, list[OpSpec], Context], np.ndarray]  # (space, specs, ctx) -> previous-layer op ms
PrevOverhead = Callable[[str, Context, float], float]  # (space, ctx, MB of weights read) -> previous overhead ms
Accept = Callable[[str, "Calibration"], bool]  # (space, trial layer) -> usable (e.g. no architecture below 0 ms)


def fit_calibration(rows: list[Row], prev_ops: PrevCost, prev_overhead: PrevOverhead, spec: CalibrationSpec,
                    role: str = "calibration", accept: Accept | None = None) -> Calibration:
    """Fit one layer per space on whole-model rows (ridge on relative error, shrunk to the identity).

    Args:
        rows: whole-model measurements (never the test split).
        prev_ops: the previous layer's per-op ms.
        prev_overhead: the previous layer's overhead ms.
        spec: bases and regularisation.
        role: stored label.
        accept: an extra check of a trial layer; the ridge is raised until it passes.
    Returns:
        The fitted layer.
    """
    if not rows:
        raise PredictorError("no calibration rows: the profile's e2e.csv has no 'calibration' split; run "
                             "`hwnas profile --e2e N` or fit `--kind lut`")
    coef = {}
    for space in sorted({r.space for r in rows}):
        mine = [r for r in rows if r.space == space]
        # kind_scale: with and without the per-kind scales; cold: without it or at each candidate knee; the lowest
        # cross-validated error decides, per space (on a tie the simpler: without it, then the lower knee)
        specs = [dataclasses.replace(spec, kind_scale=False), spec] if spec.kind_scale else [spec]
        w = [weights_mb(r.bag) for r in mine]
        knees = [k for k in spec.knees if len({r.group for r, x in zip(mine, w) if x > k}) >= MIN_BEYOND_KNEE
                 ] if spec.cold else []
        fits: list[_SpaceFit] = []
        for k in [None, *knees]:
            for sp in specs:  # the previous layer's op costs are computed once, for the first candidate
                fits.append(_SpaceFit(space, mine, prev_ops, prev_overhead, sp, role, k, fits[0] if fits else None))
        best = min((f for f in fits if f.cold_holds()), key=lambda f: f.cv_error())  # the first of equals
        coef[space] = {**best.fit(accept), "cv_error": round(best.cv_error(), 6)}
        levels = fit_levels(best, Calibration(role, spec, {space: coef[space]}))
        if levels is not None:
            coef[space]["level"] = levels
        held = best.cv_residuals()
        if len(held):
            coef[space]["cv_under_q90"] = round(float(np.quantile(held, UNDER_Q)), 6)
    return Calibration(role, spec, coef)


class _SpaceFit:
    """The design matrix of one space's rows and the ridge path over it."""

    def __init__(self, space, rows, prev_ops, prev_overhead, spec, role, knee: float | None = None,
                 like: _SpaceFit | None = None) -> None:
        self.space, self.rows, self.spec, self.role, self.prev_overhead = space, rows, spec, role, prev_overhead
        self.knee = knee
        self.weights = like.weights if like else [weights_mb(r.bag) for r in rows]  # MB each row's model reads
        g = spec.grid
        self.cache: dict[tuple[Context, OpSpec], float] = like.cache if like else {}
        for r in rows if like is None else ():
            need = [s for s in r.bag if (r.ctx, s) not in self.cache]
            if need:
                self.cache.update({(r.ctx, s): float(v) for s, v in zip(need, prev_ops(space, need, r.ctx))})
        self.harness: dict[tuple[Context, int], float] = {}
        if like is not None and like.spec.harness == spec.harness:
            self.harness = like.harness
        elif spec.harness:
            try:
                for r in rows:
                    hs = sorted({s.hidden for s in r.bag if (r.ctx, s.hidden) not in self.harness})
                    ids = [OpSpec.make(spec.harness_kind, h) for h in hs]
                    self.harness.update({(r.ctx, h): float(v) for h, v in zip(hs, prev_ops(space, ids, r.ctx))})
            except PredictorError:  # no harness entry at some width: fit without the term
                self.harness = {}
        self.use_harness = bool(self.harness)
        self.kinds = (self._kinds() if spec.per_kind else [ALL_KINDS]) if spec.beta else []
        self.scale_kinds = [k for k in self._kinds() if k != ALL_KINDS] if spec.kind_scale else []
        na, nb = (len(_basis(names, rows[0].ctx, g)) for names in (spec.alpha, spec.beta))
        self.nh = len(_basis(spec.harness, rows[0].ctx, g)) if self.use_harness else 0
        self.na, self.nb = na, nb
        self.nc = len(_basis(spec.cold, rows[0].ctx, g)) if knee is not None else 0
        x = np.stack([self._row(r, w) for r, w in zip(rows, self.weights)])  # (rows, params)
        y = np.array([r.measured_ms for r in rows])  # (rows,)
        self.theta0 = np.zeros(x.shape[1])  # the identity: alpha(ctx) = 1, no additive terms
        pos = 0
        for name in spec.alpha:
            size = len(_basis((name,), rows[0].ctx, g))
            if name == "one" or (name == "hat" and "one" not in spec.alpha):
                self.theta0[pos: pos + size] = 1.0
                break
            pos += size
        xw = x / y[:, None]  # relative error
        self.rw = 1.0 - xw @ self.theta0
        self.scale = np.sqrt((xw**2).mean(0))  # (params,)
        self.scale[self.scale == 0] = 1.0
        self.xs = xw / self.scale

    def _count(self, r: Row, kind: str) -> int:
        return sum(n for s, n in self._bag(r) if kind in (s.kind, ALL_KINDS))

    def _bag(self, r: Row) -> list[tuple[OpSpec, int]]:
        """The row's ops that cost anything (not the spec's ``free`` kinds)."""
        return [(s, n) for s, n in r.bag.items() if s.kind not in self.spec.free]

    def _kinds(self) -> list[str]:
        """Kinds given their own beta: those whose counts add information beyond the constant and the kinds
        already in (most expensive first). A count that never varies (embedding, head), or one fixed by the others
        (NAS-BERT's empty layers = layers - the rest), would only make the split between betas arbitrary."""
        mean_ms: dict[str, list[float]] = {}
        for (_, s), ms in self.cache.items():
            if s.kind not in self.spec.free:
                mean_ms.setdefault(s.kind, []).append(ms)
        order = sorted(mean_ms, key=lambda k: (-float(np.mean(mean_ms[k])), k))
        cols, kinds = [np.ones(len(self.rows))], []
        for k in order:
            c = np.array([self._count(r, k) for r in self.rows], dtype=float)
            if np.linalg.matrix_rank(np.stack(cols + [c], 1)) > len(cols):
                cols.append(c)
                kinds.append(k)
        return sorted(kinds)

    def _row(self, r: Row, w_mb: float) -> np.ndarray:
        spec, g = self.spec, self.spec.grid
        total = self.prev_overhead(self.space, r.ctx, w_mb) + sum(n * self.cache[(r.ctx, s)] for s, n in self._bag(r))
        parts = [total * _basis(spec.alpha, r.ctx, g)]
        if self.use_harness:
            h = sum(n * self.harness[(r.ctx, s.hidden)] for s, n in self._bag(r))
            parts.append(h * _basis(spec.harness, r.ctx, g))
        parts += [self._count(r, k) * _basis(spec.beta, r.ctx, g) for k in self.kinds]
        parts.append(_basis(spec.gamma, r.ctx, g))
        if spec.kind_scale:
            parts.append(np.array([sum(n * self.cache[(r.ctx, s)] for s, n in self._bag(r) if s.kind == k)
                                   for k in self.scale_kinds]))
        if self.knee is not None:
            parts.append(max(0.0, w_mb - self.knee) * _basis(spec.cold, r.ctx, g))
        return np.concatenate(parts)

    def coef(self, theta: np.ndarray) -> dict:
        na, nh, nb = self.na, self.nh, self.nb
        o = na + nh
        g0 = o + nb * len(self.kinds)
        g1 = g0 + len(_basis(self.spec.gamma, self.rows[0].ctx, self.spec.grid))
        out = {"alpha": [float(v) for v in theta[:na]], "eta": [float(v) for v in theta[na:o]],
               "beta": {k: [float(v) for v in theta[o + j * nb: o + (j + 1) * nb]] for j, k in enumerate(self.kinds)},
               "gamma": [float(v) for v in theta[g0:g1]]}
        g2 = g1 + len(self.scale_kinds)
        if self.spec.kind_scale:
            out["scale"] = {k: float(v) for k, v in zip(self.scale_kinds, theta[g1:g2])}
        if self.knee is not None:
            out["cold"] = {"knee_mb": self.knee, "slope": [float(v) for v in theta[g2: g2 + self.nc]]}
        return out

    def feasible(self, trial: Calibration) -> bool:
        """alpha > 0 at every fitted Context and every calibration row predicted above 0 (after the clamps)."""
        c = trial.coef[self.space]
        for r, w in zip(self.rows, self.weights):
            if float(np.dot(c["alpha"], _basis(self.spec.alpha, r.ctx, self.spec.grid))) <= 0:
                return False
            if self.predict(trial, r, w) <= 0:
                return False
        return True

    def predict(self, trial: Calibration, r: Row, w_mb: float) -> float:
        """Row ``r`` as ``trial`` predicts it (clamps included), from this fit's previous-layer costs."""
        specs = list(r.bag)
        hm = np.array([self.harness.get((r.ctx, s.hidden), 0.0) for s in specs])
        ms = trial.apply_ops(self.space, specs, np.array([self.cache[(r.ctx, s)] for s in specs]), r.ctx, hm)
        ovh = trial.apply_overhead(self.space, self.prev_overhead(self.space, r.ctx, w_mb), r.ctx, w_mb)
        return float(ovh + sum(r.bag[s] * m for s, m in zip(specs, ms)))

    def cold_holds(self) -> bool:
        """Without a cold term, or with one whose slope at the cross-validated ridge is not negative at any row's
        Context: predictions clamp a negative slope to 0, so a fit that leans on one would not be what predicts."""
        if self.knee is None:
            return True
        self.cv_error()
        theta = self.theta0 + _ridge(self.xs, self.rw, self._cv[0]) / self.scale
        slope = self.coef(theta)["cold"]["slope"]
        return all(float(np.dot(slope, _basis(self.spec.cold, c, self.spec.grid))) >= 0 for c in {r.ctx for r in self.rows})

    def cv_error(self) -> float:
        """Held-out (whole architectures) Huber error at the cross-validated ridge."""
        if not hasattr(self, "_cv"):
            self._cv = _cv_ridge(self.xs, self.rw, [r.group for r in self.rows])
        return self._cv[1]

    def cv_residuals(self) -> np.ndarray:
        """Each row's held-out relative error ``(measured - predicted) / measured`` at the cross-validated ridge,
        predicted by the fit without its architecture (positive: the predictor reads low). Empty with fewer than two
        architectures."""
        self.cv_error()
        return self._cv[2]

    def fit(self, accept: Accept | None) -> dict:
        if self.spec.ridge is not None:
            lam = self.spec.ridge
        else:
            self.cv_error()
            lam = self._cv[0]
        for cand in [lam] + [v for v in RIDGE_GRID if v > lam] + [None]:  # more shrinkage until usable
            theta = self.theta0 if cand is None else self.theta0 + _ridge(self.xs, self.rw, cand) / self.scale
            trial = Calibration(self.role, self.spec, {self.space: self.coef(theta)})
            if cand is None or (self.feasible(trial) and (accept is None or accept(self.space, trial))):
                break
        return {**self.coef(theta), "rows": len(self.rows), "ridge": cand}


LEVEL_MIN_ARCHS = 6  # calibration architectures a grid Context needs to get its own level (else 1) ...
LEVEL_SE = 2.0  # ... and its median must lie this many standard errors from 1


def fit_levels(fit: _SpaceFit, layer: Calibration) -> list[float] | None:
    """Per grid Context, the median of measured / predicted over the calibration rows there, as ``layer``
    predicts them: the level that the ridge, shrinking each Context's hat towards the common alpha, left. On the
    Zen 5 torch profile the fitted layer still read AdaBERT's calibration rows 3-4 % low at batch 8-32 x seq_len
    128-256 (its ridge 0.3), and its test rows alike; the levels took its held-out rows from 95 % to 97 % within
    +-10 % (``benchmarks/README.md``). A median, so one disturbed row does not move it; a Context with fewer than
    :data:`LEVEL_MIN_ARCHS` architectures, or whose median is within noise of 1 (:func:`_level`), keeps 1. Only for a layer with hats over the grid (not a transfer's or
    few-shot layer, whose rows sit at a few Contexts). None when no Context has enough rows."""
    spec = layer.spec
    if spec.grid is None or "hat" not in spec.alpha:
        return None
    ratios: dict[Context, list[float]] = {}
    archs: dict[Context, set[str]] = {}
    for r, w in zip(fit.rows, fit.weights):
        pred = fit.predict(layer, r, w)
        if pred > 0:
            ratios.setdefault(r.ctx, []).append(r.measured_ms / pred)
            archs.setdefault(r.ctx, set()).add(r.group)
    gb, gs = spec.grid
    out = [_level(ratios[c]) if len(archs.get(c := Context(b, q), ())) >= LEVEL_MIN_ARCHS else 1.0
           for b in gb for q in gs]
    return out if any(v != 1.0 for v in out) else None


def _level(ratios: list[float]) -> float:
    """The median of ``ratios`` where it lies more than :data:`LEVEL_SE` standard errors of the median (robust:
    from the MAD) from 1, else 1: on a noisy profile (the lent GPU's, visits 19 % apart) the medians are noise.

    >>> _level([1.04, 1.03, 1.05, 1.04, 1.02, 1.06]), _level([1.3, 0.8, 1.1, 0.9, 1.2, 0.85])
    (1.04, 1.0)
    """
    med = float(np.median(ratios))
    se = rse_median(ratios) * med  # the measurement protocol's own robust standard error of a median
    return round(med, 6) if abs(med - 1.0) > LEVEL_SE * se else 1.0


def cold_slope(coef: list[float], basis: tuple[str, ...], ctx: Context, grid=None) -> float:
    """ms per MB of weights beyond the knee at ``ctx`` (never negative, even far from the fitted Contexts)."""
    return max(0.0, float(np.dot(coef, _basis(basis, ctx, grid))))


UNDER_Q = 0.9  # the quantile of held-out under-prediction a calibration layer records (``cv_under_q90``)
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


def _cv_ridge(xs: np.ndarray, r: np.ndarray, groups: list[str]) -> tuple[float, float, np.ndarray]:
    """The ridge of :data:`RIDGE_GRID` with the least held-out (Huber) relative error, holding out whole
    architectures (leave-one-out up to 12 of them, else 6 folds); the strongest when there is one architecture.
    Returns (ridge, its summed Huber error, each row's held-out residual at it)."""
    names = sorted(set(groups))
    if len(names) < 2:
        return RIDGE_GRID[-1], float("inf"), np.zeros(0)
    fold_of = {g: (i if len(names) <= 12 else i % 6) for i, g in enumerate(names)}
    folds = np.array([fold_of[g] for g in groups])
    best: tuple[float, float, np.ndarray] = (np.inf, RIDGE_GRID[-1], np.zeros(0))
    for lam in RIDGE_GRID:
        err, held = 0.0, np.zeros(len(r))
        for f in np.unique(folds):
            tr, te = folds != f, folds == f
            delta = _ridge(xs[tr], r[tr], lam)
            held[te] = r[te] - xs[te] @ delta
            res = np.abs(held[te])
            err += float(np.where(res <= HUBER, res**2 / 2, HUBER * (res - HUBER / 2)).sum())  # Huber loss
        if err < best[0] * (1 - 1e-9):
            best = (err, lam, held)
    return best[1], best[0], best[2]
