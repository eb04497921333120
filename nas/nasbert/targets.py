"""What the blocks learn to reproduce: the teacher's hidden states at the block boundaries, in a fixed basis.

At each boundary the teacher's states ``t`` (width D) are centred on their mean ``mu`` and written in their
principal directions ``P`` (rows orthonormal, largest variance first, fitted on ``pca_tokens`` tokens):
``c = (t - mu) P^T``, kept to the widest student width ``H``. A student block of width ``h`` reads / writes the first
``h`` coordinates. The coordinates are divided by one scale per boundary (their root mean square over the kept
directions), so that they start near the unit scale of a LayerNorm'd block output; errors are relative, so the
scale changes no figure. Its error is measured against the whole centred state, so a narrower block pays for what it
cannot hold: ``err = (|y - c[:h]|^2 + |c[h:]|^2 + r) / E`` per token, with ``r`` the energy outside the kept ``H``
directions and ``E`` the mean energy ``|t - mu|^2`` at that boundary (0: perfect; 1: no better than the mean).

Everything is computed once per (corpus, teacher, boundaries) and cached in the run folder as
``targets.safetensors`` (coordinates in float16).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.errors import HwnasError
from nas.io import atomic_write_bytes

log = logging.getLogger(__name__)


class TargetsError(HwnasError, ValueError):
    """A targets cache that cannot be used."""


@dataclass
class Targets:
    """The teacher's states at the boundaries 1..N (boundary 0, the tokens, needs none)."""

    bounds: list[int]  # teacher hidden-state index of each boundary 0..N
    mean: torch.Tensor  # (N, D) per boundary
    basis: torch.Tensor  # (N, H, D) orthonormal rows
    coords: torch.Tensor  # (N, S, T, H) float16: centred states in the basis, per boundary and sequence
    resid: torch.Tensor  # (N, S, T) float32: energy outside the H kept directions
    energy: torch.Tensor  # (N,) mean |c|^2 per token, in the scaled coordinates
    scale: torch.Tensor  # (N,) the coordinates are (t - mu) P^T / scale: unit root mean square over the kept ones

    def block_io(self, b: int, rows: torch.Tensor, width_in: int | None) -> tuple[torch.Tensor | None, torch.Tensor,
                                                                                  torch.Tensor]:
        """Block ``b``'s input at ``width_in`` (None for block 0), its target coordinates and residual, for ``rows``."""
        x = None if b == 0 else self.coords[b - 1, rows, :, :width_in].float()  # (B, T, h)
        return x, self.coords[b, rows].float(), self.resid[b, rows]  # (B, T, H), (B, T)


def rel_error(y: torch.Tensor, target: torch.Tensor, resid: torch.Tensor, energy: torch.Tensor | float,
              reduce: bool = True) -> torch.Tensor:
    """Relative squared error of a block output ``y (B, T, h)`` against the full centred teacher state.

    Returns the mean over tokens (``reduce``) or the per-sequence means ``(B,)``.
    """
    h = y.shape[-1]
    err = ((y - target[..., :h]) ** 2).sum(-1) + (target[..., h:] ** 2).sum(-1) + resid  # (B, T)
    err = err / energy
    return err.mean() if reduce else err.mean(-1)


def fit_loss(y: torch.Tensor, target: torch.Tensor, energy: torch.Tensor | float) -> torch.Tensor:
    """The training loss: the part of :func:`rel_error` a width-``h`` output can change (same gradient)."""
    h = y.shape[-1]
    return ((y - target[..., :h]) ** 2).sum(-1).mean() / energy


@torch.no_grad()
def teacher_states(model, ids: torch.Tensor, bounds: list[int], batch_size: int = 64, progress: bool = False,
                   desc: str = "teacher"):
    """Yield ``(rows, [states (B, T, D) per boundary 1..N])`` over ``ids`` in order."""
    from tqdm.auto import tqdm

    for s in tqdm(range(0, len(ids), batch_size), desc=desc, unit="batch", disable=not progress):
        x = ids[s:s + batch_size]
        out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True)
        yield torch.arange(s, s + len(x)), [out.hidden_states[k].float() for k in bounds[1:]]


def build_targets(model, ids: torch.Tensor, bounds: list[int], width: int, pca_tokens: int, seed: int = 0,
                  progress: bool = False) -> Targets:
    """Run the teacher over ``ids (S, T)`` and express its boundary states in their principal directions."""
    n, (s_count, t_len) = len(bounds) - 1, ids.shape
    g = torch.Generator().manual_seed(seed + 11)
    fit_rows = torch.randperm(s_count, generator=g)[: max(1, -(-pca_tokens // t_len))].sort().values
    sample = [[] for _ in range(n)]
    for _, states in teacher_states(model, ids[fit_rows], bounds, progress=progress, desc="teacher (basis)"):
        for k, st in enumerate(states):
            sample[k].append(st.reshape(-1, st.shape[-1]))
    d = sample[0][0].shape[-1]
    if width > d:
        raise TargetsError(f"the student's widest block ({width}) is wider than the teacher ({d}); use a wider teacher "
                           "or a preset with narrower hiddens")
    mean, basis = torch.zeros(n, d), torch.zeros(n, width, d)
    for k in range(n):
        x = torch.cat(sample[k]).double()  # (tokens, D)
        mean[k] = x.mean(0).float()
        _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)  # rows: principal directions
        basis[k] = vh[:width].float()
    # the scale: the kept coordinates' root mean square, from the same sample (a block's LayerNorm'd output starts
    # near unit scale; teachers' states are often far from it)
    scale = torch.stack([((torch.cat(sample[k]) - mean[k]) @ basis[k].T).pow(2).mean().sqrt() for k in range(n)])
    coords = torch.zeros(n, s_count, t_len, width, dtype=torch.float16)
    resid = torch.zeros(n, s_count, t_len)
    energy = torch.zeros(n, dtype=torch.float64)
    for rows, states in teacher_states(model, ids, bounds, progress=progress, desc="teacher (targets)"):
        for k, st in enumerate(states):
            c = (st - mean[k]) / scale[k]  # (B, T, D)
            proj = c @ basis[k].T  # (B, T, H)
            total = (c ** 2).sum(-1)  # (B, T)
            coords[k, rows] = proj.half()
            resid[k, rows] = (total - (proj ** 2).sum(-1)).clamp(min=0)
            energy[k] += float(total.sum())
    return Targets(bounds, mean, basis, coords, resid, (energy / (s_count * t_len)).float(), scale)


def save_targets(t: Targets, path: Path, key: dict) -> None:
    from safetensors.torch import save

    tensors = {"mean": t.mean, "basis": t.basis, "coords": t.coords, "resid": t.resid, "energy": t.energy,
               "scale": t.scale, "bounds": torch.tensor(t.bounds)}
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()},
                                  metadata={"key": json.dumps(key, sort_keys=True)}))


def load_targets(path: Path, key: dict) -> Targets | None:
    """The cached targets if ``path`` holds those of ``key``; None if there is no cache or it is another's."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta.get("key", "null")) != json.loads(json.dumps(key, sort_keys=True)):
            log.info("%s holds targets of another corpus or teacher; rebuilding", path)
            return None
        d = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable targets cache (%s); rebuilding", path, e)
        return None
    return Targets(d["bounds"].tolist(), d["mean"], d["basis"], d["coords"], d["resid"], d["energy"], d["scale"])


__all__ = ["Targets", "TargetsError", "build_targets", "save_targets", "load_targets", "rel_error", "fit_loss",
           "teacher_states"]
