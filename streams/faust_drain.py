"""Faust's per-record hand-off from consumer to stream, without four tasks per record.

The cost: faust-streaming 0.15.3's ``Consumer._drain_messages`` delivers each
fetched record with ``wait_first(callback(message), suspend_flow.wait())``,
which wraps the delivery, the flow-suspension wait and the service's stopped
and crashed waits in four tasks, waits for the first, and cancels the rest.
That is the point of it: a delivery that blocks (flow suspended for a
rebalance, producer buffer over its limit, a stream's buffer full) can be
interrupted. But a delivery that cannot block pays for it too, on every record.

The change: before each record, check the exact conditions under which Faust's
delivery (``Conductor`` ``on_message``) would wait. If none holds, the delivery
runs to completion without suspending, so it is awaited directly; otherwise
Faust's own ``wait_first`` runs as before. Everything else is Faust's code,
line for line. Nothing changes in what is delivered, in what order, or when a
rebalance can interrupt a delivery that waits.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, cast

__all__ = ["install"]

_installed = False


def _can_block(app: Any, topic: str) -> bool:
    """Whether delivering a record of ``topic`` could wait (see faust.transport.conductor ``on_message``)."""
    if not app.flow_control.is_active():  # acquire_flow_control() waits for resume
        return True
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:  # wait_until_ebb() flushes
        return True
    conductor = app.topics
    if conductor._tp_to_callback_lock.locked():
        return True
    for chan in conductor._topic_name_index.get(topic, ()):
        if chan.queue.full():  # delivered with an awaited put
            return True
    return False


def install() -> None:
    global _installed
    if _installed:
        return
    from faust.transport.consumer import CONSUMER_FETCHING, Consumer
    from mode import Service

    async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - runs in every worker
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            if self.suspend_flow.is_set() or _can_block(app, message.topic):
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)  # cannot suspend: see the module's docstring
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    Consumer._drain_messages = _drain_messages
    _installed = True
