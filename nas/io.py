"""File helpers: atomic writes (a reader, or a killed process, never leaves half a file behind) and checked JSON reads."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and rename, so a reader never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions of a new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json_object(path: str | os.PathLike, error: type[Exception], fix: str) -> dict:
    """Parse ``path`` as a JSON object, or raise ``error`` naming the file and ``fix`` (what the user should do)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p}: not valid JSON ({e}); {fix}") from None
    if not isinstance(d, dict):
        raise error(f"{p}: expected a JSON object; {fix}")
    return d


def claim_run_folder(out: Path, settings: dict, error: type[Exception]) -> bool:
    """Write ``out/config.json``, or check the folder holds the run of ``settings`` (then it is resumed).

    Returns True when an existing run is resumed. Raises ``error`` for a folder of another run or a foreign folder.
    """
    out = Path(out)
    cfg_file = out / "config.json"
    if cfg_file.is_file():
        old = read_json_object(cfg_file, error, "delete the folder or choose another --out")
        if old != json.loads(json.dumps(settings, default=str)):
            diff = [k for k in settings if json.dumps(old.get(k), default=str) != json.dumps(settings[k], default=str)]
            raise error(f"{out} holds another run (different {', '.join(diff)}); choose another --out or delete it")
        return True
    if out.exists() and any(out.iterdir()):
        raise error(f"{out} exists and is not an hwnas run folder; choose another --out")
    atomic_write_text(cfg_file, json.dumps(settings, indent=2, default=str) + "\n")
    return False
