"""The data layer of every command that trains: load a classification task, tokenize it, cut it into batches.

Sources (see :func:`load_task`): GLUE task folders, ``datasets`` hub names and local folders, the user's own
CSV/TSV/JSON-lines files, and the bundled BBC News sample (``--task demo``). Whatever the source, a task is a
:class:`TaskData` of two :class:`Split` s with integer labels, checked the same way; every problem with the input is a
one-line :class:`DataError` naming the file and the fix. Readers live in :mod:`nas.data_sources`; pandas, torch and
``datasets`` are imported only when needed, so importing this module (for :func:`add_data_arguments`) is instant.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import HwnasError

if TYPE_CHECKING:
    import torch

    from nas.data_sources import Table


class DataError(HwnasError, ValueError):
    """A data file, folder or data option the user gave cannot be used (the message says which and why)."""


@dataclass
class Split:
    """One split of a task: parallel lists of texts and class indices."""

    text_a: list[str]  # first (or only) sentence of each example
    text_b: list[str] | None  # second sentence for pair tasks, else None
    labels: list[int]  # class index per example, into TaskData.label_names
    source: str  # file path or hub name it came from (for messages and reports)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> Split:
        """The examples at ``indices``, in that order."""
        def pick(xs: list) -> list:
            return [xs[i] for i in indices]

        return replace(self, text_a=pick(self.text_a), text_b=None if self.text_b is None else pick(self.text_b),
                       labels=pick(self.labels))


@dataclass
class TaskData:
    """A classification task: train and dev splits sharing one list of classes."""

    name: str  # "sst2", "rte", "glue/sst2", "bbc-sample", or the train file's stem for user files
    train: Split
    dev: Split
    label_names: list[str]  # the label as text for each class index
    pair: bool  # True when examples are sentence pairs

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        """First 16 hex digits of a sha256 over the content (classes, pairing, every text and label), not the name.

        Equal content gives an equal fingerprint wherever it was loaded from; use it as a cache key.
        """
        h = hashlib.sha256(json.dumps({"label_names": self.label_names, "pair": self.pair}).encode())
        for split in (self.train, self.dev):
            h.update(json.dumps([split.text_a, split.text_b, split.labels], ensure_ascii=False).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """Sizes, classes and sources, for reports and ``--json`` output."""
        counts = Counter(self.train.labels)
        return {"task": self.name, "train_examples": len(self.train), "dev_examples": len(self.dev),
                "num_labels": self.num_labels, "label_names": list(self.label_names), "pair": self.pair,
                "train_source": self.train.source, "dev_source": self.dev.source,
                "class_counts_train": {n: counts.get(i, 0) for i, n in enumerate(self.label_names)}}


# ------------------------------------------------------------------------------------------- loading
def load_task(task: str | None = None, data_dir: str | None = None, train: str | None = None, dev: str | None = None,
              text_column: str | None = None, text_pair_column: str | None = None, label_column: str | None = None,
              train_limit: int | None = None, dev_limit: int | None = None, seed: int = 0) -> TaskData:
    """Load a text-classification task from a GLUE folder, the hub, a ``datasets`` folder or the user's files.

    Args:
        task: a GLUE task (``sst2``, ``rte``, ``mrpc``, ``cola``, ``qnli``, ``qqp``, ``mnli``, ``wnli``; needs
            ``data_dir``), a hub name ``glue/TASK``, a local folder ``datasets`` can load (with ``text_column`` and
            ``label_column``), or ``demo`` (the bundled BBC News sample). Leave it out when giving ``train``/``dev``.
        data_dir: the GLUE root (holding ``SST-2/``, ``RTE/`` ...) or the task's folder itself.
        train: the user's training file (.csv, .tsv, .jsonl or .json; other names are sniffed).
        dev: the user's dev file, same format.
        text_column: column of the (first) sentence; required for files and folders, a GLUE task knows its own.
        text_pair_column: column of the second sentence, for sentence-pair tasks.
        label_column: column of the labels (strings or integers, any number of classes); required for files.
        train_limit: keep a seeded, class-stratified subset of this many training examples.
        dev_limit: the same for dev.
        seed: seed of the subsets (same seed, same subset).

    Returns:
        The task. Classes are numbered in sorted order: numerically when every training label is an integer,
        else as strings; ``label_names`` holds their text. Labels of a ``datasets`` ClassLabel keep its order.

    Raises:
        DataError: one line naming the file or option and the fix (missing file, unknown column, empty file, a
            malformed row with its line number, a single class, a dev label never seen in train, ...).

    >>> td = load_task("demo")
    >>> td.num_labels, td.pair, td.label_names[0]
    (5, False, 'business')
    >>> load_task(train="reviews.csv", dev="reviews_dev.csv", text_column="review", label_column="stars")  # doctest: +SKIP
    """
    for option, n in (("--train-limit", train_limit), ("--dev-limit", dev_limit)):
        if n is not None and n < 1:
            raise DataError(f"{option} {n}: must be at least 1 (leave it out to keep every example)")
    if task == "demo" and not (train or dev):
        return demo_task(train_limit, seed, dev_limit)
    name, (tr, dv), (text, pair, label), strict = _resolve(task, data_dir, train, dev, text_column,
                                                          text_pair_column, label_column)
    a_tr, b_tr, y_tr = _columns(tr, text, pair, label, strict)
    a_dv, b_dv, y_dv = _columns(dv, text, pair, label, strict)
    label_names, ids_tr, ids_dv = _index_labels(tr, y_tr, dv, y_dv, label)
    train_split, dev_split = Split(a_tr, b_tr, ids_tr, tr.source), Split(a_dv, b_dv, ids_dv, dv.source)
    if train_limit is not None and train_limit < len(train_split):
        train_split = train_split.subset(stratified_subset(ids_tr, train_limit, seed))
    if dev_limit is not None and dev_limit < len(dev_split):
        dev_split = dev_split.subset(stratified_subset(ids_dv, dev_limit, seed))
    return TaskData(name, train_split, dev_split, label_names, pair=pair is not None)


def demo_task(train_limit: int | None = None, seed: int = 0, dev_limit: int | None = None) -> TaskData:
    """The bundled BBC News sample (``nas/sample_data/bbc_sample``): single sentences, 5 topics, no network.

    >>> demo_task(train_limit=100).describe()["train_examples"]
    100
    """
    from importlib.resources import files

    folder = files("nas.sample_data") / "bbc_sample"
    td = load_task(train=str(folder / "train.tsv"), dev=str(folder / "dev.tsv"), text_column="text",
                   label_column="label", train_limit=train_limit, dev_limit=dev_limit, seed=seed)
    return replace(td, name="bbc-sample")


def _resolve(task, data_dir, train, dev, text, pair, label) -> tuple[str, tuple[Table, Table], tuple, bool]:
    """Read the two tables a request names: (task name, (train, dev), (text, pair, label columns), strict)."""
    from nas import data_sources as src

    if train or dev:
        if task:
            raise DataError(f"--task {task} and --train/--dev both given; pass one source: either --task or "
                            "--train FILE --dev FILE")
        if not (train and dev):
            given, lacking = ("--train", "--dev") if train else ("--dev", "--train")
            raise DataError(f"{given} {train or dev} given without {lacking}; pass both --train FILE and --dev FILE")
        tr = src.read_file(train, "--train")
        for value, option in ((text, "--text-column"), (label, "--label-column")):
            if not value:
                raise DataError(f"{train}: pass {option} to say which column to use; the file has columns: "
                                f"{', '.join(tr.columns)}")
        return Path(train).stem, (tr, src.read_file(dev, "--dev")), (text, pair, label), True
    if not task:
        raise DataError("no data given; pass --task demo, --task sst2 --data-dir DIR, --task glue/sst2, "
                        "or --train FILE --dev FILE with --text-column and --label-column")
    key = task.lower().replace("-", "")
    hub = key.startswith("glue/")
    base = key.removeprefix("glue/")
    if base in src.REGRESSION_TASKS:
        raise DataError(f"--task {task}: {base} is a regression task (a real-valued score); hwnas trains "
                        "classifiers, pick a classification task")
    if base in src.GLUE_TASKS:  # a registry name wins over a folder of that name (pass ./sst2 for the folder)
        spec = src.GLUE_TASKS[base]
        if hub:
            cols = (text or spec.hub_text, pair or spec.hub_text_pair, label or "label")
            return f"glue/{base}", src.hub_glue_tables(base), cols, False
        if not data_dir:
            raise DataError(f"--task {task}: needs --data-dir (the GLUE root holding {spec.folder}/, or that "
                            f"folder), or use the hub name glue/{base} to download it")
        cols = (text or spec.text, pair or spec.text_pair, label or spec.label)
        return base, src.glue_folder_tables(base, data_dir), cols, False
    if Path(task).is_dir():
        tables = src.folder_tables(task, label)
        for value, option in ((text, "--text-column"), (label, "--label-column")):
            if not value:
                raise DataError(f"{task}: pass {option} to say which column to use; its columns: "
                                f"{', '.join(tables[0].columns)}")
        return Path(task).resolve().name, tables, (text, pair, label), True
    known = sorted(src.GLUE_TASKS)
    raise DataError(f"--task {task}: unknown task and no such folder; known: {', '.join(known)} (with --data-dir), "
                    "glue/TASK (hub), demo, or a folder of train/validation files")


def _columns(table: Table, text: str, pair: str | None, label: str, strict: bool):
    """Check the columns exist and the cells are usable; return (text_a, text_b or None, raw labels)."""
    for col, option in ((text, "--text-column"), (pair, "--text-pair-column"), (label, "--label-column")):
        if col is not None and col not in table.columns:
            raise DataError(f"{table.source}: no column {col!r} ({option}); the file has columns: "
                            f"{', '.join(map(str, table.columns))}")
    texts = []
    for col in (text, pair):
        if col is None:
            texts.append(None)
            continue
        values = ["" if v is None else str(v) for v in table.columns[col]]
        if strict:
            empty = next((i for i, v in enumerate(values) if not v.strip()), None)
            if empty is not None:
                raise DataError(f"{table.source}: {table.where(empty)} has an empty {col!r} cell; fill it in or "
                                "remove that row")
        texts.append(values)
    labels = table.columns[label]
    missing = next((i for i, v in enumerate(labels) if v is None or (isinstance(v, str) and not v.strip())), None)
    if missing is not None:
        raise DataError(f"{table.source}: {table.where(missing)} has no label in column {label!r}; label it or "
                        "remove that row")
    return texts[0], texts[1], labels


_INT = re.compile(r"[+-]?\d+")


def _index_labels(tr: Table, y_tr: list, dv: Table, y_dv: list, column: str) -> tuple[list[str], list[int], list[int]]:
    """Number the classes (see :func:`load_task`) and map both splits' labels to class indices."""
    if tr.class_names is not None:  # a datasets ClassLabel: its own order and names
        names = list(tr.class_names)
        for table, ys in ((tr, y_tr), (dv, y_dv)):
            bad = next((i for i, y in enumerate(ys) if not 0 <= int(y) < len(names)), None)
            if bad is not None:
                raise DataError(f"{table.source}: {table.where(bad)} has label {ys[bad]!r}, not a class of "
                                f"{names} (a test split without labels?); use a labelled split")
        ids_tr, ids_dv = [int(y) for y in y_tr], [int(y) for y in y_dv]
        if len(set(ids_tr)) < 2:
            raise DataError(f"{tr.source}: every training example has label {names[ids_tr[0]]!r}; a classifier "
                            "needs at least two classes")
        return names, ids_tr, ids_dv
    y_tr = [str(y).strip() for y in y_tr]
    classes = set(y_tr)
    if len(classes) < 2:
        raise DataError(f"{tr.source}: every training example has label {y_tr[0]!r} (column {column!r}); a "
                        "classifier needs at least two classes")
    numeric = all(_INT.fullmatch(y) for y in classes)
    canon = (lambda y: str(int(y)) if _INT.fullmatch(y) else y) if numeric else (lambda y: y)
    names = sorted({canon(y) for y in classes}, key=int if numeric else None)
    index = {n: i for i, n in enumerate(names)}
    ids_dv = []
    for i, y in enumerate(y_dv):
        c = index.get(canon(str(y).strip()))
        if c is None:
            raise DataError(f"{dv.source}: {dv.where(i)} has label {str(y).strip()!r}, which never occurs in the "
                            f"training data {tr.source}; its classes are: {', '.join(names)}")
        ids_dv.append(c)
    return names, [index[canon(y)] for y in y_tr], ids_dv


def stratified_subset(labels: list[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` examples drawn per class in proportion (every class first, when ``n`` allows), sorted.

    Deterministic: the same labels, ``n`` and ``seed`` give the same indices.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    keyed = []
    for y in sorted(by_class):
        members = by_class[y]
        rng.shuffle(members)
        keyed += [(j / len(members), rng.random(), i) for j, i in enumerate(members)]  # rank within the class
    keyed.sort()
    return sorted(i for *_, i in keyed[:n])


# ------------------------------------------------------------------------------------------ batching
@dataclass
class Encoded:
    """A tokenized split, unpadded."""

    input_ids: list[list[int]]  # token ids per example: [CLS] a [SEP] (b [SEP])
    token_type_ids: list[list[int]]  # 0 on sentence a, 1 on sentence b
    labels: torch.Tensor  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, split: Split, max_len: int = 128) -> Encoded:
    """Tokenize ``split`` with a Hugging Face tokenizer, truncating each example to ``max_len`` tokens."""
    import torch

    enc = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_len)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]  # e.g. RoBERTa tokenizers return none
    return Encoded(ids, types, torch.tensor(split.labels, dtype=torch.long))


def batches(enc: Encoded, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
            indices: list[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield padded batches of ``enc`` (or of its examples at ``indices``), each example once.

    Each batch is padded to its own longest example. Without ``shuffle`` the order is the original (or
    ``indices``) order. With ``shuffle`` the order depends only on (``seed``, ``epoch``): examples are permuted,
    sorted by length within chunks of 50 batches (little padding), cut into batches, and the batches shuffled.

    Yields:
        dicts of int64 tensors: ``input_ids``, ``attention_mask`` and ``token_type_ids`` (B, T) padded with 0,
        ``labels`` (B,), and ``index`` (B,): each example's position in ``enc``.
    """
    import numpy as np

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.arange(len(enc), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(order)
        lengths = np.array([len(enc.input_ids[i]) for i in order], dtype=np.int64)
        chunk = 50 * batch_size
        groups = []
        for s in range(0, len(order), chunk):
            part = order[s:s + chunk][np.argsort(lengths[s:s + chunk], kind="stable")]
            groups += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
        groups = [groups[k] for k in rng.permutation(len(groups))]
    else:
        groups = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    for group in groups:
        yield _collate(enc, group)


def _collate(enc: Encoded, group) -> dict[str, torch.Tensor]:
    import numpy as np
    import torch

    width = max(len(enc.input_ids[i]) for i in group)
    ids = np.zeros((len(group), width), dtype=np.int64)  # (B, T)
    types = np.zeros_like(ids)  # (B, T)
    mask = np.zeros_like(ids)  # (B, T)
    for row, i in enumerate(group):
        n = len(enc.input_ids[i])
        ids[row, :n] = enc.input_ids[i]
        types[row, :n] = enc.token_type_ids[i]
        mask[row, :n] = 1
    index = torch.from_numpy(np.array(group, dtype=np.int64))  # (B,)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(types), "labels": enc.labels[index], "index": index}


# -------------------------------------------------------------------------------------------------- CLI
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data options of the training verbs (teacher, search, finetune) to ``parser``."""
    g = parser.add_argument_group("data", "one source: --task, or --train FILE --dev FILE")
    g.add_argument("--task", default=None, help="demo (bundled BBC News sample), a GLUE task (sst2, rte, mrpc, cola, "
                   "qnli, qqp, mnli, wnli; with --data-dir), a hub name glue/TASK, or a local datasets folder")
    g.add_argument("--data-dir", default=None, help="GLUE root folder (holding SST-2/, RTE/ ...) or the task folder")
    g.add_argument("--train", default=None, help="your training file: .csv, .tsv or .jsonl")
    g.add_argument("--dev", default=None, help="your dev file, same format")
    g.add_argument("--text-column", default=None, help="column of the (first) sentence")
    g.add_argument("--text-pair-column", default=None, help="column of the second sentence (pair tasks)")
    g.add_argument("--label-column", default=None, help="column of the labels (strings or integers)")
    g.add_argument("--train-limit", type=int, default=None, help="keep a seeded stratified subset of N train examples")
    g.add_argument("--dev-limit", type=int, default=None, help="keep a seeded stratified subset of N dev examples")


def task_from_args(args: argparse.Namespace) -> TaskData:
    """Load the task the options of :func:`add_data_arguments` name (``--seed`` seeds the subsets)."""
    seed = getattr(args, "seed", 0) or 0
    if args.task == "demo" and not (args.train or args.dev):
        return demo_task(args.train_limit, seed, args.dev_limit)
    return load_task(args.task, args.data_dir, args.train, args.dev, args.text_column, args.text_pair_column,
                     args.label_column, args.train_limit, args.dev_limit, seed)
