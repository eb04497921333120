"""nas.distill: AdaBERT's cell-to-layer matching and the probe KD loss that weights layers by their correctness."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from nas.distill import logit_kd_loss, matched_layers, probe_kd_loss, soft_ce

BIG = 100.0  # a logit margin whose softmax is one-hot in float32


def one_hot_logits(classes: list[int], num_labels: int = 3) -> torch.Tensor:
    """``(N, C)`` logits whose softmax is (numerically) one-hot on ``classes``."""
    return BIG * F.one_hot(torch.tensor(classes), num_labels).float()


@pytest.mark.parametrize("teacher_layers", [1, 2, 3, 6, 12])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_matched_layers_is_ceil_and_ends_at_the_last_layer(k, teacher_layers):
    layers = matched_layers(k, teacher_layers)
    assert layers == [-(-i * teacher_layers // k) for i in range(1, k + 1)]  # integer ceil(i J / K)
    assert len(layers) == k and layers[-1] == teacher_layers
    assert all(1 <= j <= teacher_layers for j in layers)
    assert all(a <= b for a, b in zip(layers, layers[1:]))


def test_matched_layers_paper_example():
    assert matched_layers(4, 6) == [2, 3, 5, 6]
    assert matched_layers(6, 3) == [1, 1, 2, 2, 3, 3]


def test_soft_ce_equals_cross_entropy_for_a_one_hot_teacher():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, 3, generator=g)
    labels = [0, 2, 1, 1, 0]
    got = soft_ce(student, one_hot_logits(labels))
    want = F.cross_entropy(student, torch.tensor(labels), reduction="none")
    assert got.shape == (5,)
    assert torch.allclose(got, want, atol=1e-6)


def test_soft_ce_temperature_scaling():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert torch.allclose(soft_ce(s, t, 2.0), 4.0 * soft_ce(s / 2.0, t / 2.0, 1.0), atol=1e-6)
    # the minimum over students is the teacher's own distribution: its entropy
    assert torch.all(soft_ce(t, t) <= soft_ce(s, t) + 1e-6)


def _kd_setup(confident_correct: int):
    """K=2 student cells, J=2 teacher layers: cell 1 matches teacher probe layer 1, cell 2 the teacher's head.

    The target of cell ``confident_correct`` is confidently right on label 0, the other confidently wrong.
    """
    labels = torch.tensor([0])
    right, wrong = one_hot_logits([0]), one_hot_logits([1])
    probes = torch.zeros(1, 3, 3)  # (N, J + 1, C)
    probes[:, 1] = right if confident_correct == 0 else wrong
    head = wrong if confident_correct == 0 else right
    student = [torch.zeros(1, 3, requires_grad=True) for _ in range(2)]
    return student, probes, head, labels


@pytest.mark.parametrize("correct", [0, 1])
def test_probe_kd_weights_favour_the_layer_that_is_right(correct):
    student, probes, head, labels = _kd_setup(correct)
    loss = probe_kd_loss(student, probes, head, labels, teacher_layers=2)
    loss.backward()
    g_right, g_wrong = student[correct].grad.abs().sum(), student[1 - correct].grad.abs().sum()
    assert g_right > 0.5 and g_wrong < 1e-6 * g_right
    # the loss is the right cell's soft CE alone (weight ~1), not the mean of both
    alone = soft_ce(student[correct].detach(), [probes[:, 1], head][correct])
    assert torch.allclose(loss.detach(), alone.mean(), atol=1e-5)


def test_probe_kd_weights_are_normalised_confidences():
    g = torch.Generator().manual_seed(2)
    n, j, c = 6, 4, 3
    probes, head = torch.randn(n, j + 1, c, generator=g), torch.randn(n, c, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    student = [torch.randn(n, c, generator=g) for _ in range(3)]
    targets = [probes[:, jj] for jj in matched_layers(3, j)[:-1]] + [head]
    conf = torch.stack([F.softmax(t, -1)[torch.arange(n), labels] for t in targets], 1)  # (N, K)
    w = conf / conf.sum(1, keepdim=True)
    terms = torch.stack([soft_ce(s, t) for s, t in zip(student, targets)], 1)  # (N, K)
    got = probe_kd_loss(student, probes, head, labels, j)
    assert torch.allclose(got, (w * terms).sum(1).mean(), atol=1e-6)


def test_student_equal_to_a_confident_teacher_beats_a_wrong_student():
    labels = torch.tensor([0, 1, 2, 0])
    right = one_hot_logits([0, 1, 2, 0])
    probes = right[:, None].repeat(1, 4, 1)  # (N, J + 1, C): every layer confident and right
    copy = [right.clone() for _ in range(3)]
    wrong = [one_hot_logits([1, 2, 0, 2]) for _ in range(3)]
    good, bad = probe_kd_loss(copy, probes, right, labels, 3), probe_kd_loss(wrong, probes, right, labels, 3)
    assert float(good) < 1e-4 < float(bad)
    assert float(logit_kd_loss(right, right)) < 1e-4 < float(logit_kd_loss(wrong[0], right))


def test_probe_kd_with_one_cell_uses_the_teacher_head():
    labels = torch.tensor([0, 1])
    probes = one_hot_logits([2, 2])[:, None].repeat(1, 3, 1)  # probes say class 2, the head is right
    head = one_hot_logits([0, 1])
    student = [head.clone()]
    assert float(probe_kd_loss(student, probes, head, labels, 2)) < 1e-4
