"""Progress on long work: ``tqdm.auto`` (a widget in Jupyter, a bar in a terminal) when it is
installed, else one line on stderr that rewrites itself; nothing with ``quiet=True``."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional


class Progress:
    """A counter of ``total`` items with a description; call it as ``progress(done, total)``."""

    def __init__(self, total: int, desc: str, quiet: bool = False) -> None:
        self.total, self.desc, self.quiet = total, desc, quiet
        self._bar: Any = None
        self._last = 0.0
        if quiet:
            return
        try:
            from tqdm.auto import tqdm  # type: ignore[import-not-found,import-untyped]

            self._bar = tqdm(total=total, desc=desc, unit="sample", leave=False)
        except ImportError:
            self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        print(f"\r{self.desc}: {done}/{total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def messages(quiet: bool) -> Optional[Callable[[str], None]]:
    """A callback that shows the compiler's progress messages on one stderr line."""
    if quiet:
        return None

    def show(message: str) -> None:
        print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    return show


def clear(quiet: bool) -> None:
    if not quiet:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
