"""The Faust ceiling for `riskmon bench`: a passthrough agent, nothing else (run as a process)."""
from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["BENCH_APP_ID"], broker=f"kafka://{os.environ['BENCH_BROKER']}", store="memory://",
    topic_replication_factor=1, consumer_auto_offset_reset="earliest", web_enabled=False,
    producer_linger=0.005, datadir=os.environ.get("BENCH_DATADIR", "/tmp/riskmon-bench-faust"),
)
source = app.topic(os.environ["BENCH_IN"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ["BENCH_OUT"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def passthrough(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value)


if __name__ == "__main__":
    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()
