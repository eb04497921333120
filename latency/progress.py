"""A progress display for long measurements: a tqdm bar on a terminal, a plain line every 20 s otherwise."""
from __future__ import annotations

import sys
import time

PLAIN_EVERY_S = 20.0


class Progress:
    """``show(what)`` before an entry, ``advance()`` after it; time left is estimated from the rate so far
    (unbiased, as entries come in random order)."""

    def __init__(self, total: int, enabled: bool = True, desc: str = "profile") -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="entry", dynamic_ncols=True, file=sys.stderr)

    def add(self, n: int) -> None:
        """``n`` more entries to come (planned as the run goes: extra visits, searched architectures)."""
        self.total += n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def show(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
        self.what = what

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last >= PLAIN_EVERY_S or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"[{self.done}/{self.total}] {getattr(self, 'what', '')}  ~{left / 60:.1f} min left",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
