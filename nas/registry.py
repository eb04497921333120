"""The one way every registry (ops, spaces, backends) takes a new entry."""
from __future__ import annotations

from typing import Any


def add_entry(registry: dict[str, Any], name: str, value: Any, error: type[Exception], what: str) -> None:
    """Put ``value`` under ``name``; ``error`` if the name is empty or already taken."""
    if not name or name in registry:
        raise error(f"{what} {name!r} is empty or registered twice")
    registry[name] = value
