"""Measured figures of a run: the student, its teacher and BERT-base, timed on this machine the profile's way.

The three models are exported and run with the profile's backend, threads and protocol; their visits are taken
in shuffled rounds (every round visits each model once, in its own seeded order), and each model's latency is
the median of its visits' medians, as the profiler does for whole models. BERT-base is ``BertConfig()`` with
random weights (latency does not depend on the values). When this machine is not the profile's device (its
fingerprint or backend differs), the figures are still taken but the report says so and claims nothing about
the budget.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class _Logits(nn.Module):
    """A transformers sequence classifier as ``(input_ids, attention_mask, token_type_ids) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def bert_base(num_labels: int = 2) -> nn.Module:
    """BERT-base (``BertConfig()``: 12 layers, hidden 768) with random weights, eager attention, eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(num_labels=num_labels)
    cfg._attn_implementation = "eager"
    return BertForSequenceClassification(cfg).eval()


def same_device(prof, backend) -> list[str]:
    """Differences between the profile's device/backend and this machine's (empty: same device)."""
    from latency.device import fingerprint
    from latency.table import compat_differences

    here = {**prof.meta, "device": fingerprint(backend.threads), "backend": backend.info()}
    return compat_differences(prof.meta, here)


def measure_note(prof, diffs: list[str], claim: str = "the budget is neither claimed met nor missed",
                 ratio: float | None = None, faults_per_run: float | None = None,
                 latency_ms: float | None = None) -> str:
    """What a measurement against ``prof`` on this machine shows, in words (``diffs``: :func:`same_device`'s;
    ``ratio``: :func:`latency.measure.speed_ratio` of the measured models, read only when ``diffs`` is empty). A
    profile that recorded no ``cpu_id`` (made before hwnas recorded it) may come from another CPU under the same
    name (a VM's "AMD EPYC"): the note says that this is not confirmed, and :func:`latency.measure.speed_warning`
    says when the measured models do not run as the profile predicts. ``faults_per_run`` (the most of the measured
    models, with ``latency_ms`` its median time): :func:`latency.measure.fault_warning` when their runs took fresh
    memory from the OS."""
    from latency.device import cpu_id
    from latency.measure import fault_warning, speed_warning

    if diffs:
        return ("this machine is not the profile's device (" + "; ".join(diffs[:3]) + "): figures are this "
                f"machine's, and {claim}")
    note = "measured on the profile's device with its backend, threads and protocol"
    if not prof.meta.get("device", {}).get("cpu_id") and cpu_id():
        note += ("; the profile records no cpu_id, so that this is the CPU it was measured on (not only one of the "
                 "same name) is not confirmed: `hwnas list profiles --json` shows this_cpu")
    device = prof.meta.get("backend", {}).get("device", "cpu")
    faults = fault_warning({"faults_per_run": faults_per_run, "latency_p50_ms": latency_ms, "device": device})
    for warning in (speed_warning(ratio, prof.name, faulted=bool(faults)) if ratio is not None else None, faults):
        if warning:
            log.warning(warning)
            note += "; " + warning
    return note


def measure_models(prof, ctx, classifiers: dict[str, nn.Module], arch=None, num_labels: int = 2,
                   archs: dict | None = None) -> tuple[dict[str, dict], list[str]]:
    """Time transformers classifiers and hwnas architectures (``arch`` as ``"student"``, and ``archs`` by name)
    the profile's way.

    Every model is exported and run with the profile's backend, threads and protocol at ``ctx``, in shuffled rounds.
    Returns ``(stats per name, differences between the profile's device and this machine)``.
    """
    from latency.allocator import apply_allocator
    from latency.backends.base import get_backend
    from latency.measure import EXPORT_CTX, measure_in_rounds, token_inputs
    from latency.stats import Protocol
    from latency.table import check_device_here
    from nas.spaces import get_space

    check_device_here(prof.name, prof.meta)
    meta = prof.meta.get("backend", {})
    protocol = Protocol.from_dict(prof.meta["protocol"])
    archs = {**({"student": arch} if arch is not None else {}), **(archs or {})}
    space = next(iter(archs.values())).get_space() if archs else get_space("adabert")
    apply_allocator(protocol.allocator)  # before the models are built (a run process has trained under glibc's own)
    be = get_backend(meta.get("name", "onnxruntime"), threads=int(meta.get("threads", 1)),
                     device=meta.get("device", "cpu"))
    try:
        diffs = same_device(prof, be)
        inputs = token_inputs(space, ctx)  # (B, T) ids and mask, no padding
        hf_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                     "token_type_ids": torch.zeros_like(inputs["input_ids"])}
        entries = {name: be.prepare(_Logits(m.eval()), hf_inputs) for name, m in classifiers.items()}
        for name, a in archs.items():
            entries[name] = be.prepare_arch(a, token_inputs(a.get_space(), EXPORT_CTX), num_labels=num_labels)
            be.bind(entries[name], token_inputs(a.get_space(), ctx))
        stats = measure_in_rounds(be, entries, protocol)
        for r in entries.values():
            r.release()
    finally:
        be.close()
    return stats, diffs


def measure_report(out: Path, prof, ctx, teacher_dir, predicted_ms: float | None = None) -> dict:
    """Measure the run's student, its teacher and BERT-base; the report's measured fields (with the student's
    ``predicted_ms``: measured over predicted, and a warning in the note when it is far off)."""
    from transformers import AutoModelForSequenceClassification

    from latency.measure import speed_ratio
    from nas.arch import Architecture

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager")
    labels = json.loads((out / "model" / "config.json").read_text())["num_labels"]
    stats, diffs = measure_models(prof, ctx, {"teacher": teacher, "bert_base": bert_base()},
                                  Architecture.load(out / "arch.json"), labels)
    ms = {k: v["latency_p50_ms"] for k, v in stats.items()}
    budget = _budget(out)
    here = not diffs
    ratio = speed_ratio([(predicted_ms, ms["student"])])
    faults = stats["student"].get("faults_per_run")
    return {
        "measured_latency_ms": ms["student"], "teacher_latency_ms": ms["teacher"], "bert_base_latency_ms": ms["bert_base"],
        "measured_p10_ms": stats["student"]["latency_p10_ms"], "measured_p90_ms": stats["student"]["latency_p90_ms"],
        "speedup_vs_teacher": ms["teacher"] / ms["student"], "speedup_vs_bert_base": ms["bert_base"] / ms["student"],
        "budget_met": (ms["student"] <= budget) if (here and budget is not None) else None,
        "budget_ratio": (ms["student"] / budget) if budget else None,
        "measured_on_profile_device": here,
        "measured_vs_predicted": ratio,
        "measured_faults_per_run": faults,
        "measure_note": measure_note(prof, diffs, ratio=ratio, faults_per_run=faults, latency_ms=ms["student"]),
        "measure_protocol": protocol_text(prof, stats),
    }


def protocol_text(prof, stats: dict[str, dict]) -> str:
    """How :func:`measure_models` measured, in words for a report: the profile's backend, threads, whole-model
    visits, and the allocator the measurement ran under (:func:`latency.allocator.allocator_note`)."""
    from latency.allocator import allocator_note
    from latency.stats import Protocol

    b = prof.meta.get("backend", {})
    visits = Protocol.from_dict(prof.meta.get("protocol", {})).for_kind("e2e").visits
    applied = next((s["allocator"] for s in stats.values() if s.get("allocator")), None)
    return (f"{b.get('name')} {b.get('version')}, {b.get('threads')} thread(s), {visits} visits in shuffled rounds "
            "(more where they disagree), median of visit medians" + allocator_note(applied))


def _budget(out: Path) -> float | None:
    return json.loads((out / "config.json").read_text()).get("budget_ms")


__all__ = ["measure_report", "measure_models", "measure_note", "bert_base", "same_device"]
