"""Readers behind :func:`nas.data.load_task`: the GLUE task registry, CSV/TSV/JSON-lines files, ``datasets`` splits.

Every reader returns a :class:`Table` (a split as columns plus how to name a row in a message); checking columns,
texts and labels is left to :mod:`nas.data`, so it is the same for every source. pandas and ``datasets`` are
imported inside the functions that need them.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nas.data import DataError


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's data lives, in the distributed TSV folders and on the hub."""

    folder: str  # folder name inside the GLUE root, e.g. "SST-2"
    text: str  # first sentence column of the TSV files
    text_pair: str | None  # second sentence column, None for single-sentence tasks
    label: str  # label column of the TSV files
    dev_file: str = "dev.tsv"  # dev file name inside the folder
    columns: tuple[str, ...] | None = None  # column names of a headerless file, None when the file has a header
    hub_text: str = "sentence"  # the same columns in the hub's `nyu-mll/glue` config
    hub_text_pair: str | None = None
    hub_dev_split: str = "validation"  # dev split of the hub config


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", "sentence", None, "label", columns=("source", "label", "annotation", "sentence")),
    "sst2": GlueTask("SST-2", "sentence", None, "label"),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", hub_text="sentence1", hub_text_pair="sentence2"),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", hub_text="question1", hub_text_pair="question2"),
    "mnli": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", dev_file="dev_matched.tsv", hub_text="premise",
                     hub_text_pair="hypothesis", hub_dev_split="validation_matched"),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", hub_text="question", hub_text_pair="sentence"),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", hub_text="sentence1", hub_text_pair="sentence2"),
    "wnli": GlueTask("WNLI", "sentence1", "sentence2", "label", hub_text="sentence1", hub_text_pair="sentence2"),
}
REGRESSION_TASKS = ("stsb",)  # GLUE tasks with a real-valued target: refused, every command here classifies
HUB_GLUE = "nyu-mll/glue"  # the hub repository of GLUE (the old name `glue` redirects to it)


@dataclass
class Table:
    """One split read from a source, as columns, before any checking."""

    source: str  # file path, or "NAME [split]" for a `datasets` split (for messages and reports)
    columns: dict[str, list]  # column name -> one value per row, all the same length
    where: Callable[[int], str]  # row index -> "line 12" (files) or "row 12" (datasets), for messages
    class_names: list[str] | None = field(default=None)  # label names of a `datasets` ClassLabel column, else None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))


# --------------------------------------------------------------------------------------------- files
def read_delimited(path: Path, sep: str, quoting: int, names: tuple[str, ...] | None = None) -> Table:
    """Read a CSV (``sep=","``, standard quoting) or TSV (``sep="\\t"``, no quoting) file; every cell a string.

    ``names`` gives the columns of a headerless file. One pass of the csv module checks that every row has as many
    fields as the header (pandas would pad a short row with empty cells) and records each row's line for messages.
    """
    import pandas as pd

    kind = "TSV" if sep == "\t" else "CSV"
    width, lines = (len(names) if names else None), []
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep, quoting=quoting)
        for fields in reader:
            if not fields:  # a blank line
                continue
            if width is None:  # the header
                width = len(fields)
            elif len(fields) != width:
                raise DataError(f"{path}: line {reader.line_num} has {len(fields)} field{'s' * (len(fields) != 1)}, the file "
                                f"has {width} columns; fix that line (a stray {'tab' if kind == 'TSV' else 'comma or quote'}?)")
            else:
                lines.append(reader.line_num)
    if width is None or (names and not lines):
        raise DataError(f"{path}: the file is empty; it needs a header line and one example per line")
    if not lines:
        raise DataError(f"{path}: the file has a header but no rows; add one example per line")
    try:
        df = pd.read_csv(path, sep=sep, quoting=quoting, dtype=str, keep_default_na=False, index_col=False,
                         header=0 if names is None else None, names=list(names) if names else None,
                         encoding="utf-8-sig", encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: could not be read as {kind} ({str(e).strip()}); check its format") from None
    if len(df) != len(lines):
        raise DataError(f"{path}: {len(lines)} rows by line but {len(df)} as {kind}; check its quoting")
    return Table(str(path), {str(c): df[c].tolist() for c in df.columns}, lambda i: f"line {lines[i]}")


def read_json_lines(path: Path) -> Table:
    """Read a JSON-lines file (one object per line; a ``.json`` file holding one list of objects also works)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e}); write one JSON object per line (.jsonl)") from None
        unit = "item"
    else:
        rows, unit = [], "line"
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
    if not rows:
        raise DataError(f"{path}: the file is empty; it needs one JSON object per line")
    for n, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}: {unit} {n} is a JSON {type(row).__name__}, not an object; "
                            'write one object per line, e.g. {"text": "...", "label": "pos"}')
    keys = list(dict.fromkeys(k for _, row in rows for k in row))
    missing = object()
    columns = {k: [row.get(k, missing) for _, row in rows] for k in keys}
    for k, values in columns.items():
        if missing in values:
            columns[k] = [None if v is missing else v for v in values]
    return Table(str(path), columns, lambda i: f"{unit} {rows[i][0]}")


READERS: dict[str, Callable[[Path], Table]] = {
    ".csv": lambda p: read_delimited(p, ",", csv.QUOTE_MINIMAL),
    ".tsv": lambda p: read_delimited(p, "\t", csv.QUOTE_NONE),
    ".jsonl": read_json_lines,
    ".json": read_json_lines,
}


def _sniff(path: Path) -> str:
    """The READERS key for a file whose name does not say its format."""
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096)
    first = head.lstrip().split("\n", 1)[0]
    if first.startswith("{"):
        return ".jsonl"
    if "\t" in first:
        return ".tsv"
    if "," in first:
        return ".csv"
    raise DataError(f"{path}: cannot tell whether it is CSV, TSV or JSON lines; rename it to .csv, .tsv or .jsonl")


def read_file(path: str | Path, option: str) -> Table:
    """Read a user's data file, by extension (.csv/.tsv/.jsonl/.json) or else by sniffing its first line."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise DataError(f"{option} {p}: {what}; pass the path of a CSV, TSV or JSON-lines file")
    return READERS[p.suffix.lower() if p.suffix.lower() in READERS else _sniff(p)](p)


def glue_folder_tables(task: str, data_dir: str | Path) -> tuple[Table, Table]:
    """Read the train and dev TSV files of GLUE task ``task`` from the GLUE root or from the task folder itself."""
    spec = GLUE_TASKS[task]
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root}: no such folder; pass the GLUE root (holding {spec.folder}/) "
                        f"or use the hub name glue/{task}")
    folder = root / spec.folder if (root / spec.folder).is_dir() else root
    tables = []
    for name in ("train.tsv", spec.dev_file):
        if not (folder / name).is_file():
            raise DataError(f"--data-dir {root}: no {spec.folder}/{name} there; pass the GLUE root (holding "
                            f"{spec.folder}/) or the {spec.folder} folder itself")
        tables.append(read_delimited(folder / name, "\t", csv.QUOTE_NONE, spec.columns))
    return tables[0], tables[1]


# ------------------------------------------------------------------------------------------ datasets
def _dataset_table(ds, name: str, split: str, label_column: str | None) -> Table:
    """A `datasets.Dataset` split as a Table; a ClassLabel label column brings its class names."""
    feature = ds.features.get(label_column) if label_column else None
    names = list(feature.names) if hasattr(feature, "names") else None
    return Table(f"{name} [{split}]", ds.to_dict(), lambda i: f"row {i + 1}", names)


def _pick_splits(dd, name: str, dev_splits: tuple[str, ...]) -> tuple[str, str]:
    splits = list(dd.keys())
    dev = next((s for s in dev_splits if s in dd), None)
    if "train" not in dd or dev is None:
        raise DataError(f"{name}: needs a 'train' split and one of {', '.join(dev_splits)}; it has: "
                        f"{', '.join(splits) or 'none'}")
    return "train", dev


def hub_glue_tables(task: str) -> tuple[Table, Table]:
    """Download (or take from the local cache) GLUE task ``task`` with ``datasets``."""
    import datasets

    spec = GLUE_TASKS[task]
    try:
        dd = datasets.load_dataset(HUB_GLUE, task)
    except (OSError, ValueError) as e:  # offline, unknown name, unreadable files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"glue/{task}: could not load it from the Hugging Face hub ({first}); check the network, "
                        f"or download GLUE and pass --task {task} --data-dir DIR") from None
    train, dev = _pick_splits(dd, f"glue/{task}", (spec.hub_dev_split,))
    return (_dataset_table(dd[train], f"glue/{task}", train, "label"),
            _dataset_table(dd[dev], f"glue/{task}", dev, "label"))


def folder_tables(folder: str | Path, label_column: str | None) -> tuple[Table, Table]:
    """Read a local `datasets` folder: ``save_to_disk`` output, or data files ``load_dataset`` understands."""
    import datasets

    p = Path(folder)
    if (p / "state.json").is_file():
        raise DataError(f"{p}: holds one saved split; save a DatasetDict with 'train' and 'validation' splits")
    try:
        if (p / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(p))
        else:
            dd = datasets.load_dataset(str(p))
    except (OSError, ValueError) as e:  # offline, unknown name, unreadable files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{p}: not a folder `datasets` can load ({first}); put train and validation files "
                        "(.csv/.parquet/.jsonl) in it, or pass --train/--dev") from None
    train, dev = _pick_splits(dd, str(p), ("validation", "dev", "test"))
    return _dataset_table(dd[train], str(p), train, label_column), _dataset_table(dd[dev], str(p), dev, label_column)
