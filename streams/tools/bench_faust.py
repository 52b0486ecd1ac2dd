"""The Faust ceiling for `riskmon bench`: a passthrough agent, nothing else (run as a process).

Its settings come from the environment the bench gives the process, read when it runs
(importing this module reads nothing).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import faust


def build_app(env: Mapping[str, str]) -> faust.App:
    """The passthrough app: every record of ``BENCH_IN`` sent on to ``BENCH_OUT``, as it came."""
    app = faust.App(
        env["BENCH_APP_ID"], broker=f"kafka://{env['BENCH_BROKER']}", store="memory://",
        topic_replication_factor=1, consumer_auto_offset_reset="earliest", web_enabled=False,
        producer_linger=0.005, datadir=env.get("BENCH_DATADIR", "/tmp/riskmon-bench-faust"),
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(env["BENCH_IN"], **raw)
    sink = app.topic(env["BENCH_OUT"], **raw)

    @app.agent(source)
    async def passthrough(stream: Any) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)

    return app


if __name__ == "__main__":
    faust.Worker(build_app(os.environ), loglevel="error", quiet=True).execute_from_commandline()
