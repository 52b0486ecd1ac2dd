"""One model for the portfolio in the stream: the training topic, the trainer, and the model topic.

Each partition scores with the portfolio's model and learns nothing itself
(:mod:`riskmon.models.portfolio`). What its rounds reveal goes to the training
topic (one partition), in order: the outcomes, then the partition's watermark,
the event time before which it has sent every outcome it will reveal (or that it
is idle: nothing to apply and nothing new for ``IDLE_S``).

One trainer in the group reads the training topic (a consumer group of its own,
so exactly one worker holds its one partition). Once every partition that is not
idle has passed the start of an epoch, it learns the outcomes revealed before it
in the core's canonical order and publishes the model versions to the model topic
(one partition), which every worker reads whole, as it reads the control topic: a
record per version, with the boundary it is in force from, and a record saying up
to which boundary what it holds is complete. A partition applies an event only
once the model in force at its time is known, and scores it with that one; so the
stream gives replay's decisions, whatever the partition count and whichever
worker trains.

The trainer keeps no state of its own: each model record carries the trainer as it
stood (model, rolling AUC, populations, challenger) and where to read the training
topic again to rebuild what it had not learned yet. A trainer killed anywhere
restarts from the last record it published, in this worker or another; outcomes it
reads twice (its own restart, or a partition that redid rounds after a crash) are
learned once.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import pickle
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from riskmon.models.codec import decode, format_ts
from riskmon.models.errors import Rejected
from riskmon.models.events import ModelCommand
from riskmon.models.portfolio import Portfolio, Revealed
from riskmon.models.risk_model import RiskModel
from riskmon.models.step import Outcome

from .settings import Settings
from .topics import client_config, start_client

__all__ = ["FIRST", "IDLE_S", "ModelBook", "TrainerLoop", "Training", "outcome_record", "pack", "watermark_record"]

log = logging.getLogger("riskmon.trainer")

IDLE_S = 5.0  # a partition with nothing to apply and nothing new for this long no longer holds the trainer back
MAX_MODEL_RECORD = 900_000  # bytes: under Kafka's default 1 MB record limit


def outcome_record(partition: int, revealed: Revealed) -> bytes:
    """The training topic's record of the outcomes one event revealed."""
    return orjson.dumps({"k": "o", "p": partition, "ts": revealed.ts, "a": revealed.account_id, "e": revealed.event_id,
                         "o": [[o.features, o.score, o.default] for o in revealed.outcomes]})


def watermark_record(partition: int, before: int | None) -> bytes:
    """The partition has sent every outcome it will reveal before event time ``before`` (None: it is idle)."""
    return orjson.dumps({"k": "w", "p": partition, "w": before})


FIRST = -(2**62)  # the boundary the model a trainer starts from is in force from: before any event


@dataclass
class _Version:
    boundary: int  # in force for the events whose boundary (Portfolio.boundary) is at or after this
    name: str  # the model version decisions carry
    blob: bytes  # the trainer as it stood (pickled, compressed)
    model: RiskModel | None = None  # read from the blob when first asked for


def pack(trainer: Portfolio) -> bytes:
    return zlib.compress(pickle.dumps(trainer, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class ModelBook:
    """The model versions this worker has read from the model topic, by the boundary each is in force from.

    >>> book = ModelBook()
    >>> book.add(ModelBook.encode({"b": FIRST, "v": "m.v0", "new": True, "through": 0, "offset": 0, "marks": {}},
    ...                           pack(Portfolio())))
    >>> book.at(0)[0], book.at(86_400_000)
    ('m.v0', None)
    """

    boundaries: list[int] = field(default_factory=list)
    versions: list[_Version] = field(default_factory=list)
    through: int | None = None  # what the book holds is complete up to this boundary
    last: dict[str, Any] = field(default_factory=dict)  # the newest record's head
    last_blob: bytes = b""  # the trainer as the newest record carrying one left it
    _latest: tuple[bytes, Portfolio | None] | None = None

    @staticmethod
    def encode(head: dict[str, Any], blob: bytes = b"") -> bytes:
        """A model record. ``head``: ``b`` the boundary a new version is in force from, ``v`` its name, ``new``
        whether it is one (else the blob only carries the trainer's book-keeping), ``through`` how far the
        book is complete, ``offset`` where a restarted trainer reads the training topic again, ``marks``
        the partitions' watermarks then; ``blob``: the trainer, packed (:func:`pack`)."""
        h = orjson.dumps(head)
        return len(h).to_bytes(4, "big") + h + blob

    def add(self, value: bytes) -> None:
        n = int.from_bytes(value[:4], "big")
        head = orjson.loads(value[4:4 + n])
        blob = value[4 + n:]
        # A version published again (by a trainer restarted after publishing it) is the same one: the first stays.
        if blob and head["new"] and (not self.boundaries or head["b"] > self.boundaries[-1]):
            self.boundaries.append(head["b"])
            self.versions.append(_Version(head["b"], head["v"], blob))
        if blob:
            self.last_blob = blob
        if self.through is None or head["through"] > self.through:
            self.through = head["through"]
        self.last = head

    def at(self, boundary: int) -> tuple[str, RiskModel] | None:
        """The version in force at ``boundary`` and its model; None while the book is not complete that far."""
        if self.through is None or boundary > self.through or not self.boundaries:
            return None
        i = bisect.bisect_right(self.boundaries, boundary) - 1
        if i < 0:
            return None
        v = self.versions[i]
        if v.model is None:
            v.model = pickle.loads(zlib.decompress(v.blob)).model
        return v.name, v.model

    def trainer(self) -> Portfolio | None:
        """The trainer as the newest record left it (None before any): a copy of its own."""
        return pickle.loads(zlib.decompress(self.last_blob)) if self.last_blob else None

    def latest(self) -> Portfolio | None:
        """The trainer as the newest record left it, to read (metrics): decoded once per record."""
        if self._latest is None or self._latest[0] is not self.last_blob:
            self._latest = (self.last_blob, self.trainer())
        return self._latest[1]


class Training:
    """The trainer's work, without Kafka: what it reads from the training topic, and the model records it makes.

    :class:`TrainerLoop` drives it from the topics; a test drives it by hand.
    """

    def __init__(self, book: ModelBook, partitions: int, start: Portfolio) -> None:
        self.partitions = partitions
        self.marks: dict[int, int | None] = {}
        self.late = 0  # outcomes dropped: their epoch was learned already
        self.commands_seen = 0  # control records read (model commands among them)
        p = book.trainer()
        if p is not None:
            last = book.last
            p.learned_before = last["through"]
            self.marks = {int(k): v for k, v in last["marks"].items()}
            self.offset = int(last["offset"])  # where to read the training topic from
        else:
            p, self.offset = pickle.loads(pickle.dumps(start)), 0
        self.portfolio = p

    def take(self, offset: int, value: bytes | None) -> None:
        """One training record: a partition's outcomes, or its watermark."""
        p = self.portfolio
        try:
            r = orjson.loads(value or b"")
            if r["k"] == "w":
                self.marks[int(r["p"])] = None if r["w"] is None else int(r["w"])
                return
            outcomes = tuple(Outcome(list(f), s, bool(d)) for f, s, d in r["o"])
            late = p.late
            p.offer(Revealed(int(r["ts"]), str(r["a"]), outcomes, str(r["e"]), offset))
            if p.late != late:
                self.late += p.late - late
                log.info("trainer: partition %s sent outcomes of %s (event %s) after the model learned to %s: "
                         "dropped (a step redone after a crash, or a straggler)", r["p"], format_ts(int(r["ts"])),
                         r["e"], format_ts(p.learned_before or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:  # written by workers only
            log.error("trainer: training record at offset %d is not one (%s); passed over", offset, exc)

    def publishable(self) -> int | None:
        """The latest epoch boundary every partition not idle has passed and the trainer has not learned to
        (None: none; a partition not heard from yet may still reveal anything)."""
        if len(self.marks) < self.partitions:
            return None
        active = [w for w in self.marks.values() if w is not None]
        if not active:
            return None
        epoch = self.portfolio.epoch_ms
        until = min(active) // epoch * epoch
        learned = self.portfolio.learned_before
        return None if learned is not None and until <= learned else until

    def learn(self, until: int, control: list[bytes | None], position: int) -> list[bytes]:
        """Take the control records read since the last call (model commands), learn to ``until``, and give
        the model records to publish. ``position``: the training topic's next offset to read."""
        p = self.portfolio
        for value in control:
            try:
                ev = decode(value or b"")
            except Rejected:
                continue  # the workers dead-letter it
            if isinstance(ev, ModelCommand):
                p.command(ev)
        marks = {str(k): w for k, w in self.marks.items()}
        # A version's record says the book is complete up to its own boundary only (a worker reading it before
        # the pass's later versions must not take it for them), and where to read again to rebuild the rest.
        again = p.resume_offset(position)
        records: list[bytes] = []

        def publish(boundary: int) -> None:
            records.append(ModelBook.encode({"b": boundary, "v": p.model_version, "new": True, "through": boundary,
                                             "offset": again, "marks": marks,
                                             "lineage": {**p.lineage(), "learned_before": boundary}}, pack(p)))

        if p.learned_before is None:
            publish(FIRST)  # the model it starts from, in force until one is learned
        p.advance_to(until, publish)
        # The last record carries the trainer as this pass leaves it (a challenge, its rolling AUC), complete up to
        # the boundary: what a restart reads.
        records.append(ModelBook.encode({"b": until, "v": p.model_version, "new": False, "through": until,
                                         "offset": p.resume_offset(position), "marks": marks}, pack(p)))
        return records


class TrainerLoop:
    """The stream's trainer: learns from the training topic, publishes to the model topic (see the module).

    Runs in every worker; the consumer group of ``<app id>-trainer`` gives its one partition to one of them.
    """

    def __init__(self, settings: Settings, bootstrap: str, book: ModelBook, control: Any, partitions: int,
                 start: Portfolio) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.book = book  # the worker's, read from the model topic by its feed
        self.control = control  # the worker's control feed: model commands come from it
        self.partitions = partitions
        self.start_from = start  # the trainer before anything is learned (the scorecard, or a model file's)
        self.tp = TopicPartition(settings.topic_training, 0)
        self.training: Training | None = None  # while this worker holds the training partition
        self.control_seen = 0  # the control offset read up to
        self.consumer: Any = None
        self.published = 0

    async def run(self, producer: Any, book_ready: Any) -> None:
        """Hold the training partition when the group gives it here, and train while it is held."""
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=f"{self.settings.app_id}-trainer",
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         fetch_max_wait_ms=100, **client_config(self.settings))
        await start_client(self.consumer, self.settings, self.bootstrap)
        self.consumer.subscribe([self.settings.topic_training])
        try:
            while True:
                got = await self.consumer.getmany(timeout_ms=200, max_records=5000)
                if self.tp not in self.consumer.assignment():
                    if self.training is not None:
                        log.info("trainer: the training partition went to another worker")
                    self.training = None
                    continue
                if self.training is None:
                    await book_ready()  # the model topic read to its end: the last record says where to resume
                    t = self.training = Training(self.book, self.partitions, self.start_from)
                    self.control_seen = 0
                    self.consumer.seek(self.tp, t.offset)
                    log.info("trainer: holds the training partition; %s learned (%d outcomes), reading from offset %d",
                             t.portfolio.model_version, t.portfolio.outcomes_seen, t.offset)
                    continue  # records fetched before the seek are read again from there
                for m in got.get(self.tp, ()):
                    self.training.take(m.offset, m.value)
                await self._advance(producer)
        finally:
            await self.consumer.stop()

    async def _advance(self, producer: Any) -> None:
        t = self.training
        assert t is not None
        until = t.publishable()
        if until is None:
            return
        hw = self.control.highwater()
        if hw is None or self.control.position < hw:
            return  # a model command before the boundary may not be read yet
        control = [value for _, _, value in self.control.since(self.control_seen)]
        self.control_seen = self.control.position
        records = t.learn(until, control, await self.consumer.position(self.tp))
        for value in records:
            if len(value) > MAX_MODEL_RECORD:
                log.error("trainer: a model record of %d bytes is over the model topic's limit; not published (%s)",
                          len(value), t.portfolio.model_version)
                return
        sent = [await producer.send(self.settings.topic_models, value=v, partition=0) for v in records]
        await asyncio.gather(*sent)
        self.published += len(records)
