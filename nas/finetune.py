"""Fine-tune a saved hwnas model on a task with logit distillation from a task teacher; optionally re-distil it on
the corpus first (NAS-BERT's two-stage KD: ``--repretrain``).

``finetune(model_dir, task, teacher_dir)`` loads the model (``save_pretrained`` layout, e.g. a NAS-BERT run's
``model_<budget>/``), replaces its classifier for the task's labels, and trains every weight with
``(1 - kd_weight) CE + kd_weight KD`` against the teacher's cached logits (made by ``hwnas teacher`` on the same
training data). Dev accuracy is taken after every epoch. The folder written (``OUT/``) holds the fine-tuned model
(``save_pretrained`` layout with a model card and tokenizer) and ``finetune.json`` (written last: accuracy, history,
minutes). When the model comes from a NAS-BERT run, the run's ``report.json`` gets ``<task>_accuracy`` for its
budget (``<task>_accuracy_repretrained`` with ``--repretrain``).

Re-distillation (``repretrain_steps > 0``) trains the whole model end to end on the run's corpus, each block's
output against the teacher's state at its boundary (the run's cached targets), before fine-tuning. It needs the
NAS-BERT run folder: the model's parent, or ``run=``.

Both stages checkpoint (a kill, then the same call, goes on) and run data-parallel under ``torchrun`` (DDP).

>>> r = finetune("runs/nasbert/model_3ms", task, "runs/teacher_sst2")          # doctest: +SKIP
>>> r["dev_accuracy"]                                                           # doctest: +SKIP
0.86
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import HwnasError
from nas.io import atomic_write_text, read_json_object
from nas.train import Checkpoint, accuracy, linear_schedule, predict_logits, seed_everything

log = logging.getLogger(__name__)

DONE = "finetune.json"


class FinetuneError(HwnasError, ValueError):
    """A model, teacher or run folder fine-tuning cannot use (the message says which and the fix)."""


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning (kept in ``finetune.json``)."""

    epochs: float = 3.0  # passes over the training examples (fractions allowed)
    batch_size: int = 32  # global batch (over all processes)
    lr: float = 3e-4  # AdamW peak (linear warm-up 6 %, then linear decay)
    weight_decay: float = 0.01
    kd_weight: float = 0.5  # share of the logit-KD term (the rest is cross-entropy on the labels)
    kd_temperature: float = 1.0
    max_len: int = 128  # tokenizer truncation
    repretrain_steps: int = 0  # > 0: re-distil on the run's corpus for this many steps first
    repretrain_lr: float = 5e-4  # Adam, re-distillation
    seed: int = 0


def _with_labels(model: nn.Module, arch, num_labels: int, pair: bool) -> nn.Module:
    """The same model with a classifier for ``num_labels`` (weights of every other part kept)."""
    new = arch.get_space().build(arch, num_labels=num_labels, pair=pair)
    own = new.state_dict()
    state = {k: v for k, v in model.state_dict().items() if k in own and own[k].shape == v.shape}
    if any(not k.startswith("head.") for k in set(own) - set(state)):
        raise FinetuneError("the saved weights do not fit the architecture outside the classifier; re-save the model")
    new.load_state_dict(state, strict=False)
    return new


def _ddp(model: nn.Module, size: int) -> nn.Module:
    if size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def repretrain(model: nn.Module, run_dir: Path, cfg: FinetuneConfig, ckpt: Checkpoint, progress: bool = False
               ) -> list[dict]:
    """Distil ``model`` end to end on the NAS-BERT run's corpus; returns the loss history."""
    from tqdm.auto import tqdm

    from nas.dist import average_gradients, shard, world
    from nas.nasbert.run import open_run
    from nas.nasbert.targets import fit_loss

    w = world()
    ncfg, text, targets, layouts = open_run(run_dir)
    gpb = ncfg.groups_per_block
    n_train = len(text) - ncfg.heldout
    core = model
    params = [p for p in core.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.repretrain_lr)
    sched = linear_schedule(opt, cfg.repretrain_steps)
    state = ckpt.restore({"model": core, "opt": opt, "sched": sched})
    step, history = (int(state["step"]), list(state["history"])) if state else (0, [])
    bar = tqdm(total=cfg.repretrain_steps, initial=step, desc="re-distil", unit="step", disable=not progress)
    losses: list[float] = []
    core.train()
    while step < cfg.repretrain_steps:
        g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        rows = torch.randint(0, n_train, (ncfg.batch_size,), generator=g)
        mine = shard(rows, w.rank, w.size)
        ids = text.ids[mine]
        outs = core.block_outputs(ids, torch.ones_like(ids))  # [(b, T, H) per width group, after the embedding]
        loss = sum(fit_loss(outs[(lay.index + 1) * gpb], targets.block_io(lay.index, mine, None)[1],
                            float(targets.energy[lay.index])) for lay in layouts) / len(layouts)
        loss = loss * (len(mine) * w.size / len(rows))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, None, w.size)  # the head gets none here; DDP would wait for it
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % 50 == 0 or step == cfg.repretrain_steps:
            history.append({"step": step, "loss": sum(losses) / len(losses)})
            losses.clear()
        if w.main and (ckpt.due() or step == cfg.repretrain_steps):
            ckpt.store({"model": core, "opt": opt, "sched": sched}, step=step, history=history)
    bar.close()
    return history


def finetune(model_dir: str | os.PathLike, task, teacher_dir: str | os.PathLike, out: str | os.PathLike | None = None,
             config: FinetuneConfig | None = None, run: str | os.PathLike | None = None, progress: bool = False
             ) -> dict[str, Any]:
    """Fine-tune a saved model on ``task`` with KD from the teacher in ``teacher_dir`` (see the module docstring).

    Args:
        model_dir: a model folder in ``save_pretrained`` layout (e.g. ``RUN/model_3ms``).
        task: a :class:`nas.data.TaskData`; the teacher must have been built on its training examples.
        teacher_dir: a folder made by ``hwnas teacher``.
        out: the folder to write (default ``<model_dir>_<task>``, ``..._repretrained`` with re-distillation).
        config: settings; ``repretrain_steps > 0`` re-distils on the NAS-BERT run's corpus first.
        run: the NAS-BERT run folder for re-distillation (default: the model folder's parent).
    Returns:
        ``finetune.json``'s content (process 0; other processes return ``{}``).
    """
    from nas.data import batches, encode
    from nas.dist import shard, world
    from nas.modeling import load_pretrained, save_pretrained
    from nas.teacher import load_teacher

    cfg = config or FinetuneConfig()
    if cfg.epochs <= 0 or cfg.batch_size < 1 or not 0 <= cfg.kd_weight <= 1:
        raise FinetuneError("--epochs must be > 0, --batch-size >= 1 and --kd-weight in 0..1")
    w = world()
    model_dir = Path(model_dir)
    suffix = "_repretrained" if cfg.repretrain_steps > 0 else ""
    out = Path(out) if out else model_dir.parent / f"{model_dir.name}_{task.name.replace('/', '_')}{suffix}"
    if (out / DONE).is_file():
        done = read_json_object(out / DONE, FinetuneError, "delete the folder to fine-tune again")
        if done.get("key") == _key(model_dir, task, teacher_dir, cfg):
            return done
        raise FinetuneError(f"{out} holds another fine-tuning (other model, task, teacher or settings); choose another "
                            "--out or delete it")
    teacher = load_teacher(teacher_dir)
    if teacher.info["num_labels"] != task.num_labels or teacher.info["pair"] != task.pair:
        raise FinetuneError(f"{teacher_dir}: the teacher was trained for {teacher.info['num_labels']} labels, the task "
                            f"has {task.num_labels} (or pairs differ); build a teacher on this task with `hwnas teacher`")
    t_logits, _ = teacher.lookup(task.train)
    model, arch, mconf = load_pretrained(model_dir)
    run_dir = Path(run) if run else model_dir.parent
    if cfg.repretrain_steps > 0 and not (run_dir / "targets.safetensors").is_file():
        raise FinetuneError(f"--repretrain needs the NAS-BERT run folder the model came from (with targets.safetensors"
                            f"); {run_dir} is not one: pass --run RUN")
    seed_everything(cfg.seed)
    start = time.perf_counter()
    re_hist: list[dict] = []
    if cfg.repretrain_steps > 0:
        re_hist = repretrain(model, run_dir, cfg, Checkpoint(out / ".ckpt" / "repretrain.pt"), progress and w.main)
    model = _with_labels(model, arch, task.num_labels, task.pair)
    tok = _tokenizer(model_dir, teacher)
    enc_train, enc_dev = encode(tok, task.train, cfg.max_len), encode(tok, task.dev, cfg.max_len)
    core, net = model, _ddp(model, w.size)
    opt = torch.optim.AdamW(core.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = -(-len(enc_train) // cfg.batch_size)
    total = max(1, int(per_epoch * cfg.epochs))
    sched = linear_schedule(opt, total)
    ckpt = Checkpoint(out / ".ckpt" / "finetune.pt")
    state = ckpt.restore({"model": core, "opt": opt, "sched": sched})
    step, history = (int(state["step"]), list(state["history"])) if state else (0, [])
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="fine-tune", unit="step", disable=not (progress and w.main))
    losses: list[float] = []
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        core.train()
        for i, b in enumerate(batches(enc_train, cfg.batch_size, shuffle=True, seed=cfg.seed + 3, epoch=epoch)):
            if i < skip:
                continue
            part = shard(torch.arange(len(b["labels"])), w.rank, w.size)
            logits = net(b["input_ids"][part], b["attention_mask"][part], b["token_type_ids"][part])
            ce = F.cross_entropy(logits, b["labels"][part])
            from nas.distill import logit_kd_loss

            kd = logit_kd_loss(logits, t_logits[b["index"][part]], cfg.kd_temperature)
            loss = ((1 - cfg.kd_weight) * ce + cfg.kd_weight * kd) * (len(part) * w.size / len(b["labels"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(core.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            end_of_epoch = step % per_epoch == 0 or step == total
            if end_of_epoch:
                dev_logits, dev_labels = predict_logits(core, batches(enc_dev, 128))
                history.append({"step": step, "epoch": step / per_epoch, "train_loss": sum(losses) / len(losses),
                                "dev_accuracy": accuracy(dev_logits, dev_labels)})
                losses.clear()
            if w.main and (ckpt.due() or end_of_epoch):
                ckpt.store({"model": core, "opt": opt, "sched": sched}, step=step, history=history)
            if step == total or end_of_epoch:
                break
    bar.close()
    if not w.main:
        return {}
    acc = history[-1]["dev_accuracy"]
    minutes = (time.perf_counter() - start) / 60
    card = {**mconf.card, "task": task.name, "dev_accuracy": acc, "teacher": str(teacher_dir),
            "fine-tuned from": str(model_dir), "re-distilled steps": cfg.repretrain_steps}
    save_pretrained(core, arch, out, task.num_labels, task.pair, extra_card=card)
    tok.save_pretrained(out)
    result = {"key": _key(model_dir, task, teacher_dir, cfg), "task": task.describe(), "model_dir": str(model_dir),
              "dev_accuracy": acc, "teacher_accuracy": teacher.info["teacher_accuracy"], "history": history,
              "repretrain_history": re_hist, "minutes": minutes, "processes": w.size,
              "params": sum(p.numel() for p in core.parameters()), "config": dataclasses.asdict(cfg)}
    atomic_write_text(out / DONE, json.dumps(result, indent=1) + "\n")
    ckpt.clear()
    Checkpoint(out / ".ckpt" / "repretrain.pt").clear()
    _note_in_run(model_dir, f"{task.name.split('/')[-1]}_accuracy{suffix}", acc)
    return result


def _key(model_dir: Path, task, teacher_dir, cfg: FinetuneConfig) -> dict:
    return {"model": str(Path(model_dir).resolve()), "data": task.fingerprint(),
            "teacher": str(Path(teacher_dir).resolve()), "config": dataclasses.asdict(cfg)}


def _tokenizer(model_dir: Path, teacher):
    from transformers import AutoTokenizer

    if (model_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(model_dir)
    return teacher.tokenizer()


def _note_in_run(model_dir: Path, field: str, value: float) -> None:
    """Record the accuracy in the NAS-BERT run's report.json beside the model's budget (if it came from one)."""
    report = model_dir.parent / "report.json"
    if not report.is_file():
        return
    r = read_json_object(report, FinetuneError, "delete it and run the search again to rewrite it")
    hit = False
    for row in r.get("budgets", []):
        if row.get("model_dir") and Path(row["model_dir"]).resolve() == model_dir.resolve():
            row[field], hit = value, True
    if hit:
        atomic_write_text(report, json.dumps(r, indent=2, default=str) + "\n")


__all__ = ["FinetuneConfig", "FinetuneError", "finetune", "repretrain"]
