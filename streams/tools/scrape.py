"""A running worker's /metrics, read by the tools that watch workers (soak, chaos)."""
from __future__ import annotations

import urllib.request

__all__ = ["scrape", "total"]


def scrape(port: int, timeout_s: float = 5.0) -> str:
    """The Prometheus text a worker on this machine serves on ``port`` (OSError if it does not answer)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        return str(r.read().decode())


def total(text: str, name: str, having: str = "") -> float:
    """The sum of the samples of metric ``name`` (whatever their labels) whose line contains ``having``.

    >>> text = 'a_total{r="ok"} 2.0\\na_total{r="bad"} 3.0\\na_total_x 9.0\\nb 1.0\\n'
    >>> total(text, "a_total"), total(text, "a_total", 'r="ok"'), total(text, "b"), total(text, "c")
    (5.0, 2.0, 1.0, 0)
    """
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")) and having in line)
