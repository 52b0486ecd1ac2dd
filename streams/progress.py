"""Progress of long work on a terminal: one line on stderr, redrawn a few times a second; silent when piped."""
from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["Progress"]


class Progress:
    """``update(done)`` as work goes; ``finish()`` at the end.

    Quiet unless ``enabled`` (by default: stderr is a terminal), so logs and pipes stay clean.

    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress("replay", 200, "events", enabled=True, stream=out, every_s=0.0)
    >>> p.update(50); p.finish()
    >>> out.getvalue().split("\\r")[-1]
    'replay [##############################] 200/200 events\\n'
    >>> q = Progress("simulate", None, "days", enabled=True, stream=out, every_s=0.0); q.update(3)
    >>> out.getvalue().split("\\r")[-1]
    'simulate 3 days'
    """

    def __init__(self, label: str, total: int | None, unit: str, enabled: bool | None = None,
                 stream: IO[str] | None = None, every_s: float = 0.2) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.every_s = every_s
        self._drawn = float("-inf")
        self._done = 0

    def update(self, done: int) -> None:
        self._done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn >= self.every_s:
            self._drawn = now
            self._draw(done)

    def finish(self) -> None:
        if self.enabled:
            self._draw(self.total if self.total is not None else self._done)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, done: int) -> None:
        if self.total:
            width = 30
            filled = width * min(done, self.total) // self.total
            line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {self.unit}"
        else:
            line = f"{self.label} {done} {self.unit}"
        self.stream.write("\r" + line)
        self.stream.flush()
