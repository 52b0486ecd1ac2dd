"""Every bad-input class through the stream processor: its typed reason, its bytes kept, the good records intact."""
from __future__ import annotations

import io
import pathlib

from riskmon.models.codec import dumps
from riskmon.models.partitioning import partition_for
from riskmon.models.simulate import simulate
from riskmon.streams.replay import replay

from ..bad_input import CASES
from .test_processor import run_stream


def test_every_bad_record_is_dead_lettered_with_its_reason_and_bytes_and_the_rest_flows(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 60, seed=8)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    out = io.BytesIO()
    replay(log, out, partitions=4)
    # In the partition of A0000001, the account the well-formed bad records name.
    home = partition_for("A0000001", 4)
    extra: dict[tuple[str, int], list[bytes]] = {}
    for _, raw, category, _ in CASES:
        # Every partition reads the one control partition; partition 0 dead-letters what they all refuse.
        for p in (range(4) if category == "control" else (home,)):
            extra.setdefault((category, p), []).append(raw)
    ports, proc = run_stream(events, seed=4, extra=extra, max_future_s=86_400)
    assert sorted(ports.decisions) == sorted(out.getvalue().splitlines()), "the good records are all processed"
    got = {raw: headers["riskmon-reason"].decode() for raw, headers in ports.dead}
    assert len(ports.dead) == len(CASES)
    for name, raw, _, reason in CASES:
        assert got.get(raw) == reason, f"{name}: {got.get(raw)} (want {reason})"
    want: dict[str, int] = {}
    for _, _, category, reason in CASES:
        want[reason] = want.get(reason, 0) + 1
    counted: dict[str, int] = {}
    for (_, reason), n in proc.rejected.items():
        counted[reason] = counted.get(reason, 0) + n
    assert counted == want
    assert proc.counts["applied"] == len(events)
