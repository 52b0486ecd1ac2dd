"""The chaos harness (`riskmon chaos`) on a small fixed schedule: a worker paused (SIGSTOP), then a third
worker joins (a rebalance while the others hold events for event-time order), while the group works through
a log already on the broker; every decision replay makes must arrive, none other, each byte for byte.
Schedules with repeated kills still lose decisions (issue 19 is open; the README's table says how many)."""
from __future__ import annotations

import io

import pytest

from riskmon.streams.tools.chaos import STOP_LIMIT_S, parse_schedule, run_chaos

pytestmark = pytest.mark.integration


def test_a_group_heals_after_a_pause_and_a_rebalance() -> None:
    out = io.StringIO()
    r = run_chaos(parse_schedule("pause@4:3,add@8"), seed=None, workers=2, accounts=1_000, days=50, rate=None,
                  drain_s=90, out=out)
    print(out.getvalue())
    assert r.expected > 300, "the log must give the group something to lose"
    assert (r.lost, r.unexpected, r.changed) == (0, 0, 0), out.getvalue()
    assert r.drained and not r.exited, out.getvalue()
    # All three stop on SIGTERM within the limit (before the fix, a rebalance that waited on
    # records the event-time hold kept unacked never ended, and neither did a stop).
    assert len(r.stop_s) == 3 and max(r.stop_s) <= STOP_LIMIT_S, r.stop_s
    assert r.ok
