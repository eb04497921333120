"""AdaBERT's differentiable search and the retraining of the derived model, both resumable.

Search (Chen et al., IJCAI 2020, with the efficiency term made a device latency): the training examples are split
into a part for the network's weights and a held-out part (``arch_split``) for the architecture logits; steps
alternate (first-order, as GDAS). Each step samples one path (straight-through Gumbel-softmax, temperature
``tau = max(tau0 exp(-decay epoch), floor)``, the paper's schedule with its 80 epochs compressed into ours) and
minimises ``(1 - gamma) CE + gamma KD_probe`` for the weights and, for the logits, the same plus
``beta L_eff``: the budget penalty (``latency.loss``) of the expected latency under softmax(logits), from the
device profile's predictor (``efficiency="latency"``), or the paper's proxies (expected parameters or FLOPs,
normalised by the space's largest; against a budget in the same unit when one is given).

Retraining trains the derived model from scratch (embeddings from the teacher again) with
``(1 - gamma) CE + gamma KD_probe`` and no efficiency term.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from nas.adabert.derive import op_distribution
from nas.adabert.supernet import SuperNet, init_embedding, probe_logits_of
from nas.configs import SearchConfig
from nas.distill import probe_kd_loss
from nas.train import Checkpoint, accuracy, predict_logits, seed_everything

log = logging.getLogger(__name__)


def _split_indices(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed + 7)
    perm = torch.randperm(n, generator=g).tolist()
    k = max(1, int(round(n * share))) if n > 1 else 0
    return sorted(perm[k:]), sorted(perm[:k])


def _task_loss(logits: list[torch.Tensor], batch, t_logits, t_probes, layers: int, cfg: SearchConfig):
    ce = F.cross_entropy(logits[-1], batch["labels"])
    kd = probe_kd_loss(logits, t_probes[batch["index"]], t_logits[batch["index"]], batch["labels"], layers,
                       cfg.kd_temperature)
    return (1 - cfg.gamma) * ce + cfg.gamma * kd, ce, kd


class Efficiency:
    """``L_eff`` from an expected cost: a budget penalty (latency, or a proxy with a budget) or the paper's proxy."""

    def __init__(self, cost, budget: float | None, penalty: str, beta: float) -> None:
        from latency.loss import BudgetPenalty

        self.cost, self.budget, self.beta = cost, budget, beta
        (self.lo, _), (self.hi, _) = cost.extremes()
        self.penalty = BudgetPenalty(penalty, budget) if budget is not None else None

    def __call__(self, task: torch.Tensor, probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from latency.loss import expected_latency

        e = expected_latency({k: v.double() for k, v in probs.items()}, self.cost).float()
        if self.penalty is None:  # the paper: beta x normalised expected cost, no budget
            return task + self.beta * e / self.hi, e
        if self.penalty.name == "mul#log":  # multiplicative (ProxylessNAS): it scales the task loss itself
            return self.penalty(task, e), e
        return task + self.beta * self.penalty(torch.zeros((), dtype=e.dtype), e), e


def search(net: SuperNet, enc, targets: tuple[torch.Tensor, torch.Tensor], layers: int, efficiency: Efficiency,
           cfg: SearchConfig, folder: Path, progress: bool = False) -> tuple[dict[str, torch.Tensor], list[dict], float]:
    """Run (or resume) the search; returns (final probabilities, history rows, minutes spent in total).

    ``targets`` are the teacher's ``(logits (N, C), probe_logits (N, J + 1, C))`` on ``enc``'s examples, in order;
    ``layers`` is J.
    """
    from tqdm.auto import tqdm

    from nas.data import batches

    t_logits, t_probes = targets
    w_idx, a_idx = _split_indices(len(enc), cfg.arch_split, cfg.seed)
    opt_w = torch.optim.Adam(net.weight_parameters(), lr=cfg.lr)
    opt_a = torch.optim.Adam(net.arch_logits.parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999))
    ckpt = Checkpoint(folder / "search.pt")
    epoch, skip, history, spent = 0, 0, [], 0.0
    objects = {"net": net, "opt_w": opt_w, "opt_a": opt_a}
    state = ckpt.restore(objects)
    if state is not None:
        epoch, skip, history, spent = int(state["epoch"]), int(state["skip"]), list(state["history"]), state["spent"]
        log.info("resuming the search at epoch %d, batch %d", epoch, skip)
    start = time.perf_counter()
    per_epoch = -(-len(w_idx) // cfg.batch_size)
    bar = tqdm(total=per_epoch * cfg.epochs, initial=epoch * per_epoch + skip, desc="search", unit="step",
               disable=not progress)
    net.train()

    def save(ep, sk):
        ckpt.store(objects, epoch=ep, skip=sk, history=history, spent=spent + time.perf_counter() - start)

    while epoch < cfg.epochs:
        w_batches = list(batches(enc, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, indices=w_idx))
        a_batches = list(batches(enc, cfg.batch_size, shuffle=True, seed=cfg.seed + 1, epoch=epoch, indices=a_idx))
        for i in range(skip, len(w_batches)):
            tau = cfg.tau(epoch + i / len(w_batches))
            # weights: CE + KD on a training batch
            logits, k = net(w_batches[i], net.sample(tau))
            loss_w, ce, kd = _task_loss(logits, w_batches[i], t_logits, t_probes, layers, cfg)
            net.zero_grad(set_to_none=True)
            loss_w.backward()
            nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
            opt_w.step()
            # architecture: CE + KD + beta L_eff on a held-out batch
            b = a_batches[i % len(a_batches)]
            logits_a, _ = net(b, net.sample(tau))
            task_a, _, _ = _task_loss(logits_a, b, t_logits, t_probes, layers, cfg)
            loss_a, e = efficiency(task_a, net.probabilities())
            net.zero_grad(set_to_none=True)
            loss_a.backward()
            opt_a.step()
            bar.update(1)
            last = i == len(w_batches) - 1
            if i % cfg.log_every == 0 or last:
                with torch.no_grad():
                    probs = net.probabilities()
                history.append({"epoch": epoch, "step": epoch * len(w_batches) + i, "tau": tau,
                                "ce": ce.item(), "kd": kd.item(), "loss_w": loss_w.item(), "loss_a": loss_a.item(),
                                "eff": (loss_a - task_a).item(), "expected_cost": e.item(), "sampled_cells": k,
                                **op_distribution(net.space, probs), "epoch_end": bool(last)})
                bar.set_postfix(ce=f"{ce.item():.3f}", cost=f"{e.item():.3g}", tau=f"{tau:.2f}")
            if not last and ckpt.due():
                save(epoch, i + 1)
        epoch, skip = epoch + 1, 0
        save(epoch, 0)
    bar.close()
    with torch.no_grad():
        probs = {k: v.detach().clone() for k, v in net.probabilities().items()}
    return probs, history, (spent + time.perf_counter() - start) / 60


def retrain(model: nn.Module, k: int, enc_train, enc_dev, targets: tuple[torch.Tensor, torch.Tensor], layers: int,
            cfg: SearchConfig, folder: Path, progress: bool = False) -> tuple[float, list[dict], float]:
    """Train the derived model from scratch with KD; returns (dev accuracy, history rows, minutes in total)."""
    from tqdm.auto import tqdm

    from nas.data import batches

    t_logits, t_probes = targets
    hidden = model.head.pool.in_features
    probes = nn.ModuleList(nn.Linear(hidden, model.num_labels) for _ in range(k - 1))
    params = list(model.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.retrain_lr, weight_decay=0.01)
    per_epoch = -(-len(enc_train) // cfg.batch_size)
    total = per_epoch * cfg.retrain_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, total // 20))
                                              * max(0.0, 1 - s / max(1, total)))
    ckpt = Checkpoint(folder / "retrain.pt")
    epoch, skip, history, spent = 0, 0, [], 0.0
    objects = {"model": model, "probes": probes, "opt": opt, "sched": sched}
    state = ckpt.restore(objects)
    if state is not None:
        epoch, skip, history, spent = int(state["epoch"]), int(state["skip"]), list(state["history"]), state["spent"]
    start = time.perf_counter()
    bar = tqdm(total=total, initial=epoch * per_epoch + skip, desc="retrain", unit="step", disable=not progress)

    def save(ep, sk):
        ckpt.store(objects, epoch=ep, skip=sk, history=history, spent=spent + time.perf_counter() - start)

    dev_acc = float("nan")
    while epoch < cfg.retrain_epochs:
        model.train()
        losses = []
        for i, b in enumerate(batches(enc_train, cfg.batch_size, shuffle=True, seed=cfg.seed + 2, epoch=epoch)):
            if i < skip:
                continue
            logits = probe_logits_of(model, probes, b)
            loss, ce, kd = _task_loss(logits, b, t_logits, t_probes, layers, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if ckpt.due():
                save(epoch, i + 1)
        dev_logits, dev_labels = predict_logits(model, batches(enc_dev, 128))
        dev_acc = accuracy(dev_logits, dev_labels)
        history.append({"epoch": epoch, "train_loss": sum(losses) / max(1, len(losses)), "dev_accuracy": dev_acc})
        bar.set_postfix(dev=f"{dev_acc:.4f}")
        epoch, skip = epoch + 1, 0
        save(epoch, 0)
    bar.close()
    if history:
        dev_acc = history[-1]["dev_accuracy"]
    return dev_acc, history, (spent + time.perf_counter() - start) / 60


def new_supernet(space, num_labels: int, pair: bool, teacher, seed: int) -> tuple[SuperNet, str]:
    seed_everything(seed)
    net = SuperNet(space, num_labels, pair)
    note = init_embedding(net.embedding, *teacher.embedding_tables())
    # the word table (vocab x dim, most of the student's weights) stays at the teacher's values during the search:
    # it is not what the search chooses, and its dense Adam update would cost more than the cells; retraining
    # trains it
    net.embedding.word.weight.requires_grad_(False)
    return net, note + "; word table frozen during the search"


def new_student(space, arch, num_labels: int, pair: bool, teacher, seed: int) -> nn.Module:
    seed_everything(seed + 1)
    model = space.build(arch, num_labels=num_labels, pair=pair)
    init_embedding(model.embedding, *teacher.embedding_tables())
    return model


__all__ = ["SearchConfig", "Efficiency", "search", "retrain", "new_supernet", "new_student"]
