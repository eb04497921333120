"""The profile folder on disk (docs/formats.md): ``profile.json``, ``ops.csv``, ``e2e.csv``.

Rows are appended one at a time with a single ``os.write`` of a whole line followed by ``fsync``, so a killed
profiler leaves at most one partial last line, which :func:`read_rows` drops and :class:`RowAppender` cuts
before appending. Everything read is validated; a corrupt or foreign file raises :class:`ProfileError` naming
the file and the field.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "e2e.csv")
>>> with RowAppender(path, ["a", "b"]) as out:
...     out.append({"a": "x,y", "b": 1})
>>> read_rows(path, ["a", "b"], kinds={"b": int})
[{'a': 'x,y', 'b': 1}]
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency.device import COMPAT_FIELDS, OPTIONAL_COMPAT_FIELDS
from nas.errors import HwnasError
from nas.io import atomic_write_text, read_json_object

log = logging.getLogger(__name__)

SCHEMA = "hwnas.profile/1"
OPS_COLUMNS = ["op_key", "kind", "hidden", "batch", "seq_len", "latency_p50_ms", "latency_p10_ms", "latency_p90_ms",
               "cv", "n_runs", "flops", "bytes"]
E2E_COLUMNS = ["arch_json", "space", "preset", "split", "batch", "seq_len", "latency_p50_ms", "latency_p10_ms",
               "latency_p90_ms", "cv", "n_runs", "flops", "params"]
OPS_KEY = ("op_key", "batch", "seq_len")
E2E_KEY = ("arch_json", "batch", "seq_len")
_LAT = {"latency_p50_ms": float, "latency_p10_ms": float, "latency_p90_ms": float, "cv": float, "n_runs": int}
OPS_KINDS = {"hidden": int, "batch": int, "seq_len": int, "flops": int, "bytes": int, **_LAT}
E2E_KINDS = {"batch": int, "seq_len": int, "flops": int, "params": int, **_LAT}
META_FIELDS = ("schema", "device", "backend", "protocol", "grid", "spaces")
# the parts of profile.json that must agree before adding rows to a folder
COMPAT_SECTIONS = ("backend", "protocol", "grid", "spaces", "e2e")


class ProfileError(HwnasError, ValueError):
    """A profile folder that is missing, corrupt, foreign, or measured under another setup."""


# ------------------------------------------------------------------------------------------------ rows
def _line(columns: list[str], row: dict) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in columns])
    return buf.getvalue().encode("utf-8")


class RowAppender:
    """Append CSV rows durably: header on a new file, one ``os.write`` + ``fsync`` per row."""

    def __init__(self, path: str | os.PathLike, columns: list[str]) -> None:
        self.path, self.columns = Path(path), list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_partial_line(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self.fd).st_size == 0:
            self._write(_line(self.columns, {c: c for c in self.columns}))
        else:
            read_header(self.path, self.columns)

    def _write(self, data: bytes) -> None:
        n = os.write(self.fd, data)
        if n != len(data):  # pragma: no cover - regular files take the whole line
            raise OSError(f"{self.path}: short write ({n} of {len(data)} bytes)")
        os.fsync(self.fd)

    def append(self, row: dict) -> None:
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise ValueError(f"row for {self.path.name} lacks {missing}")
        self._write(_line(self.columns, row))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RowAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last newline (a row cut short by a kill). Returns the bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        log.warning("%s: dropped a partial last line (%d bytes) left by an interrupted run", path, len(data) - keep)
    return len(data) - keep


def read_header(path: Path, columns: list[str]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    if header != columns:
        raise ProfileError(
            f"{path}: bad header {header}; expected the columns {','.join(columns)} (docs/formats.md). "
            "Is it a file of another tool or version? Move it away or use another --out"
        )


def read_rows(path: str | os.PathLike, columns: list[str], kinds: dict[str, type] | None = None) -> list[dict]:
    """Read and validate a profile CSV. A missing or empty file has no rows; a partial last line is ignored."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    if rows[0] != columns:
        read_header(path, columns)
    kinds = kinds or {}
    out = []
    for lineno, values in enumerate(rows[1:], start=2):
        if len(values) != len(columns):
            raise ProfileError(f"{path}: line {lineno} has {len(values)} fields, expected {len(columns)}; "
                               "the file is corrupt: delete that line and re-run `hwnas profile` to re-measure it")
        row: dict[str, Any] = {}
        for c, v in zip(columns, values):
            try:
                row[c] = kinds[c](float(v)) if kinds.get(c) is int else kinds.get(c, str)(v)
            except ValueError:
                raise ProfileError(f"{path}: line {lineno}, field {c!r}: {v!r} is not a number; "
                                   "delete that line and re-run `hwnas profile` to re-measure it") from None
        out.append(row)
    return out


def row_key(row: dict, key: tuple[str, ...]) -> tuple:
    return tuple(row[k] for k in key)


def check_unique(path: Path, rows: list[dict], key: tuple[str, ...]) -> None:
    seen: set[tuple] = set()
    for r in rows:
        k = row_key(r, key)
        if k in seen:
            raise ProfileError(f"{path}: entry {k} appears twice (two runs wrote to one folder?); "
                               "delete one of the rows")
        seen.add(k)


# ---------------------------------------------------------------------------------------- profile.json
def read_meta(folder: str | os.PathLike) -> dict:
    """Load and validate ``profile.json``."""
    path = Path(folder) / "profile.json"
    if not path.is_file():
        raise ProfileError(f"{folder}: not a profile folder (no profile.json); create one with `hwnas profile`")
    meta = read_json_object(path, ProfileError, "re-create the profile with `hwnas profile --force-new`")
    if meta.get("schema") != SCHEMA:
        raise ProfileError(f"{path}: field 'schema' is {meta.get('schema')!r}, expected {SCHEMA!r}; "
                           "a profile of another tool or version: re-profile with `hwnas profile`")
    for k in META_FIELDS:
        if k not in meta:
            raise ProfileError(f"{path}: missing field {k!r} (docs/formats.md); the file is corrupt or foreign")
    for k in ("name", "version", "threads"):
        if k not in meta["backend"]:
            raise ProfileError(f"{path}: missing field 'backend.{k}'")
    return meta


def write_meta(folder: str | os.PathLike, meta: dict) -> Path:
    return atomic_write_text(Path(folder) / "profile.json", json.dumps(meta, indent=2, sort_keys=False) + "\n")


def compat_view(meta: dict) -> dict:
    """The parts of a profile's metadata that must match for its rows to be comparable."""
    device = meta.get("device", {})
    view = {f"device.{k}": device.get(k) for k in COMPAT_FIELDS}
    view.update({f"device.{k}": device[k] for k in OPTIONAL_COMPAT_FIELDS if device.get(k) is not None})
    for section in COMPAT_SECTIONS:
        value = meta.get(section)
        if isinstance(value, dict):
            view.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            view[section] = value
    return view


def compat_differences(stored: dict, new: dict) -> list[str]:
    """What differs between two profiles' :func:`compat_view` (an optional field only where both recorded it).
    A protocol field the stored profile predates reads as the rule it was measured under
    (:meth:`latency.stats.Protocol.from_dict`), so an older partial profile resumes under the same rules."""
    a, b = compat_view(_full_protocol(stored)), compat_view(_full_protocol(new))
    optional = {f"device.{k}" for k in OPTIONAL_COMPAT_FIELDS}
    keys = [k for k in sorted(set(a) | set(b)) if k not in optional or (k in a and k in b)]
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def _full_protocol(meta: dict) -> dict:
    """``meta`` with its protocol's missing fields filled with their legacy values (the hash is not affected)."""
    if not isinstance(meta.get("protocol"), dict):
        return meta
    from latency.stats import Protocol

    return {**meta, "protocol": Protocol.from_dict(meta["protocol"]).to_dict()}


def check_compatible(folder: str | os.PathLike, stored: dict, new: dict) -> None:
    """Refuse to add rows measured under another fingerprint or protocol to ``folder``."""
    diffs = compat_differences(stored, new)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ProfileError(f"{folder} holds a profile measured under another setup ({shown}); "
                           "pass --force-new to start a new folder, or choose another --out")


def profile_device(meta: dict) -> str:
    """What a profile measured, in words: ``"cuda (NVIDIA H200)"`` or ``"cpu (AMD EPYC, 2 cores)"``."""
    dev, fp = meta.get("backend", {}).get("device", "cpu"), meta.get("device", {})
    return f"cuda ({fp.get('gpu') or 'a GPU'})" if dev == "cuda" else f"cpu ({fp.get('cpu_model')}, {fp.get('cores')} cores)"


def check_device_here(name: str | os.PathLike, meta: dict, device: str | None = None) -> None:
    """Refuse, in one line, to measure on this machine against a profile of another kind of device: a GPU
    profile on a machine torch sees no GPU on, or a profile whose device differs from the ``--device`` asked for
    (``device``; None: the profile's own)."""
    from latency.backends.base import cuda_problem

    theirs = meta.get("backend", {}).get("device", "cpu")
    if device is not None and device != theirs:
        raise ProfileError(f"{name} is a {theirs.upper()} profile, measured on {profile_device(meta)}; this run "
                           f"measures on --device {device}: pass a {device.upper()} profile of this machine, or "
                           f"--device {theirs}")
    problem = cuda_problem() if theirs == "cuda" else None
    if problem:
        raise ProfileError(f"{name} is a GPU profile, measured on {profile_device(meta)}; this machine cannot run "
                           f"CUDA ({problem}): measure on that GPU, or use a CPU profile of this machine")


def fingerprint_hash(meta: dict) -> str:
    """A short stable id of a profile's device, backend and protocol (for ``predictor.json``'s ``profile``)."""
    text = json.dumps(compat_view(meta), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- profiles
@dataclass
class Profile:
    """A loaded profile folder: metadata plus the two tables as pandas DataFrames."""

    path: Path
    meta: dict
    ops: Any  # pandas.DataFrame with OPS_COLUMNS
    e2e: Any  # pandas.DataFrame with E2E_COLUMNS

    @property
    def name(self) -> str:
        return self.path.name


def load_profile(folder: str | os.PathLike) -> Profile:
    """Load and validate a profile folder (a path, or the name of a shipped profile).

    Raises:
        ProfileError: naming the file and field, for a missing, corrupt or foreign profile.
    """
    import pandas as pd

    path = resolve(folder)
    meta = read_meta(path)
    ops = read_rows(path / "ops.csv", OPS_COLUMNS, OPS_KINDS)
    e2e = read_rows(path / "e2e.csv", E2E_COLUMNS, E2E_KINDS)
    check_unique(path / "ops.csv", ops, OPS_KEY)
    check_unique(path / "e2e.csv", e2e, E2E_KEY)
    bad = sorted({r["split"] for r in e2e} - {"calibration", "test"})
    if bad:
        raise ProfileError(f"{path / 'e2e.csv'}: field 'split' has {bad}; expected calibration or test")
    return Profile(path, meta, pd.DataFrame(ops, columns=OPS_COLUMNS), pd.DataFrame(e2e, columns=E2E_COLUMNS))


def shipped_root() -> Path:
    import profiles

    return Path(profiles.__file__).parent


def resolve(folder: str | os.PathLike) -> Path:
    """A folder path as given, else the shipped profile of that name."""
    p = Path(folder)
    if p.is_dir() or os.sep in str(folder):
        return p
    shipped = shipped_root() / str(folder)
    return shipped if shipped.is_dir() else p


def _count_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return max(0, f.read().count(b"\n") - 1)


def list_profiles(root: str | os.PathLike | None = None) -> list[dict]:
    """The profiles under ``root`` (default: the shipped ``profiles/`` package), one dict each with a ``name``.

    ``this_cpu``: whether the profile's recorded ``cpu_id`` is this machine's (None where it recorded none, as
    profiles made before hwnas recorded it; a CPU's name alone can be shared by two CPUs, e.g. a VM's "AMD EPYC").
    ``allocator``: the protocol's (``latency.allocator``): what a deployment sets to run as the profile predicts.
    """
    from latency.device import cpu_id
    from latency.stats import Protocol

    root = Path(root) if root is not None else shipped_root()
    here = cpu_id()
    out = []
    for d in sorted(p for p in root.iterdir() if (p / "profile.json").is_file()) if root.is_dir() else []:
        try:
            meta = read_meta(d)
        except ProfileError as e:
            out.append({"name": d.name, "path": str(d), "error": str(e)})
            continue
        b = meta["backend"]
        out.append({
            "name": d.name, "path": str(d), "cpu": meta["device"].get("cpu_model"), "gpu": meta["device"].get("gpu"),
            "backend": b["name"], "version": b["version"], "device": b.get("device"), "threads": b["threads"],
            "ops_rows": _count_rows(d / "ops.csv"), "e2e_rows": _count_rows(d / "e2e.csv"),
            "status": meta.get("status"), "created": meta.get("created"),
            "this_cpu": None if not meta["device"].get("cpu_id") else meta["device"]["cpu_id"] == here,
            "allocator": Protocol.from_dict(meta.get("protocol", {})).allocator,
        })
    return out
