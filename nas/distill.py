"""Knowledge-distillation losses shared by the engines.

AdaBERT's probe-based KD (Chen et al., IJCAI 2020, Sec. 3.2): a probe classifier on every teacher layer reads what
that layer knows about the task; student cell i (of K) is matched to teacher layer ``j = ceil(i J / K)`` and its
own probe is trained to agree with teacher probe j. Each example's per-layer terms are weighted by how well the
teacher probe does on that example (its probability of the true label), normalised over the matched layers, so
layers that know the answer teach more. The last cell is matched to the teacher's own classifier (the best probe
of its last layer), through the student's head.

>>> import torch
>>> matched_layers(k=4, teacher_layers=6)
[2, 3, 5, 6]
>>> t = torch.zeros(2, 7, 3); s = [torch.zeros(2, 3)] * 4
>>> float(probe_kd_loss(s, t, torch.zeros(2, 3), torch.tensor([0, 1]), 6)) > 0
True
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def matched_layers(k: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1..J) matched to each student cell i = 1..k: ``ceil(i J / k)``."""
    return [math.ceil(i * teacher_layers / k) for i in range(1, k + 1)]


def soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-example cross-entropy of the student against the teacher's softened distribution ``(N,)``, times T^2."""
    t = F.softmax(teacher_logits / temperature, -1)  # (N, C)
    return -(t * F.log_softmax(student_logits / temperature, -1)).sum(-1) * temperature**2


def probe_kd_loss(student: list[torch.Tensor], teacher_probes: torch.Tensor, teacher_logits: torch.Tensor,
                  labels: torch.Tensor, teacher_layers: int, temperature: float = 1.0) -> torch.Tensor:
    """AdaBERT's KD term for one batch.

    Args:
        student: logits ``(N, C)`` of the student's probe on each of its K cells; the last one is the student's head.
        teacher_probes: ``(N, J + 1, C)`` logits of the teacher's probes (index 0: embeddings, j: layer j).
        teacher_logits: ``(N, C)`` the teacher's classifier (matched to the student's head).
        labels: ``(N,)`` true classes (they weight the layers).
        teacher_layers: J.
    Returns:
        The scalar loss: mean over examples of the weighted sum over cells.
    """
    k = len(student)
    layers = matched_layers(k, teacher_layers)
    targets = [teacher_probes[:, j] for j in layers[:-1]] + [teacher_logits]  # K x (N, C)
    with torch.no_grad():
        conf = torch.stack([F.softmax(t, -1).gather(1, labels[:, None])[:, 0] for t in targets], 1)  # (N, K)
        w = conf / conf.sum(1, keepdim=True).clamp(min=1e-8)  # (N, K)
    terms = torch.stack([soft_ce(s, t, temperature) for s, t in zip(student, targets)], 1)  # (N, K)
    return (w * terms).sum(1).mean()


def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
                  ) -> torch.Tensor:
    """Plain logit distillation (Hinton et al.): soft cross-entropy, mean over the batch."""
    return soft_ce(student_logits, teacher_logits, temperature).mean()


__all__ = ["matched_layers", "soft_ce", "probe_kd_loss", "logit_kd_loss"]
