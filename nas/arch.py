"""Architecture files: a space name, its version, a preset and one choice per decision, as JSON.

>>> from nas.spaces import get_space
>>> a = get_space("adabert", "tiny").sample(seed=0)
>>> Architecture.from_json(a.to_json()) == a
True
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import HwnasError
from nas.io import atomic_write_text


class ArchError(HwnasError, ValueError):
    """An architecture file that cannot be used; the message names the file and field and the fix."""


@dataclass
class Architecture:
    space: str  # registered space name
    version: int  # the space's version the choices were made in
    preset: str  # the space preset (sizes, candidate lists)
    choices: dict[str, Any] = field(default_factory=dict)  # decision name -> chosen candidate

    def to_dict(self) -> dict:
        return {"space": self.space, "version": self.version, "preset": self.preset, "choices": dict(self.choices)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @property
    def key(self) -> str:
        """A compact canonical string (sorted keys, no spaces) for tables such as ``e2e.csv``."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def get_space(self):
        from nas.spaces import get_space

        return get_space(self.space, self.preset)

    @staticmethod
    def from_dict(d: Any, source: str = "<dict>") -> Architecture:
        """Parse and validate against the registered space; raises :class:`ArchError` naming the bad field."""
        from nas.spaces.base import SPACE_REGISTRY, SpaceError, get_space

        if not isinstance(d, dict):
            raise ArchError(f"{source}: expected a JSON object with space, version, preset, choices")
        for k in ("space", "version", "choices"):
            if k not in d:
                raise ArchError(f"{source}: missing field {k!r}; an architecture file needs space, version, choices")
        extra = set(d) - {"space", "version", "preset", "choices"}
        if extra:
            raise ArchError(f"{source}: unknown field(s) {sorted(extra)}")
        for k, types, what in (("space", (str,), "a string"), ("preset", (str, type(None)), "a string"),
                               ("version", (int,), "an integer")):
            if not isinstance(d.get(k), types) or isinstance(d.get(k), bool):
                raise ArchError(f"{source}: field {k!r} must be {what}, got {d.get(k)!r}")
        try:
            space = get_space(d["space"], d.get("preset"))
        except SpaceError as e:
            raise ArchError(f"{source}: field 'space'/'preset': {e}") from None
        if d["space"] not in SPACE_REGISTRY:  # pragma: no cover - get_space raised already
            raise ArchError(f"{source}: unknown space {d['space']!r}")
        if d["version"] != space.version:
            raise ArchError(
                f"{source}: field 'version' is {d['version']!r} but space {space.name!r} is at version "
                f"{space.version}; re-sample or convert the architecture for this version"
            )
        choices = d["choices"]
        if not isinstance(choices, dict):
            raise ArchError(f"{source}: field 'choices' must be an object of decision -> choice")
        names = [dec.name for dec in space.decisions()]
        missing = [n for n in names if n not in choices]
        unknown = [n for n in choices if n not in names]
        if missing or unknown:
            raise ArchError(
                f"{source}: field 'choices' has {len(choices)} decisions, space {space.name!r} "
                f"(preset {space.preset.name!r}) needs {len(names)}"
                + (f"; missing {missing[:5]}" if missing else "")
                + (f"; unknown {unknown[:5]}" if unknown else "")
            )
        for dec in space.decisions():
            try:
                dec.index(choices[dec.name])
            except SpaceError as e:
                raise ArchError(f"{source}: field 'choices.{dec.name}': {e}") from None
        return Architecture(space.name, space.version, space.preset.name, {n: choices[n] for n in names})

    @staticmethod
    def from_json(text: str, source: str = "<json>") -> Architecture:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"{source}: not valid JSON ({e.msg} at line {e.lineno}); fix or re-create the file") from None
        return Architecture.from_dict(d, source)

    @staticmethod
    def load(path: str | os.PathLike) -> Architecture:
        p = Path(path)
        if p.is_dir():
            raise ArchError(f"{p}: is a folder, not an architecture file; pass the path of its arch.json")
        if not p.is_file():
            raise ArchError(f"{p}: no such architecture file; create one with `hwnas sample --out {p}`")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ArchError(f"{p}: cannot read the architecture file ({e}); fix or re-create it") from None
        return Architecture.from_json(text, str(p))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.to_json() + "\n")
