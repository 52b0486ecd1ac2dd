"""Workaround for Tansu 0.6.0 holding fetches open; active only against Tansu.

The fault: a Fetch waits for most of ``fetch_max_wait_ms`` even when records
arrive for the partitions it asks about (measured with aiokafka here:
produce-to-consume median 129 ms with a 500 ms wait, 4 ms with a 10 ms wait).
Faust creates its worker consumer with ``fetch_max_wait_ms=1500``, so on Tansu
every decision came about 1.5 s after its event. Against Kafka a Fetch answers
as soon as ``fetch_min_bytes`` (1) are there, and the setting costs nothing.

The fix: shorten the wait of the consumers Faust creates. Idle fetches then
come back more often, which costs a little CPU, and only against Tansu.
"""
from __future__ import annotations

__all__ = ["FETCH_MAX_WAIT_MS", "install"]

FETCH_MAX_WAIT_MS = 20
_installed = False


def install(wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    global _installed
    if _installed:
        return
    from . import faust_internals

    faust_internals.shorten_fetch_wait(wait_ms)
    _installed = True
