"""Per-account state: plain ints, floats and lists, so it copies cheaply and
serialises compactly (orjson) into a changelog-backed table.

The keys are short because there is one of these per account in the table and
in its changelog; :data:`FIELDS` spells each one out.
"""
from __future__ import annotations

import hashlib
from base64 import urlsafe_b64decode, urlsafe_b64encode
from typing import Any, NotRequired, TypedDict

from .featurespec import FeatureSpec, default_spec
from .velocity import COUNTERS
from .vocabulary import STATES

__all__ = [
    "AccountState", "Instalment", "FIELDS", "new_state", "copy_state", "upgrade",
    "I_ID", "I_DUE_TS", "I_AMOUNT", "I_PAID", "I_MISSED", "I_LABELLED", "I_SCORE", "I_X",
    "RECENT_IDS", "fingerprint", "seen", "remember", "packed", "unpacked",
]

# An open instalment, kept compact as a list; its fields by position:
I_ID = 0  # instalment_id
I_DUE_TS = 1  # due date (event time, ms)
I_AMOUNT = 2  # amount due (minor units)
I_PAID = 3  # paid towards it so far (minor units)
I_MISSED = 4  # 1 once the due date passed without full payment (counted once)
I_LABELLED = 5  # 1 once its outcome was learned (good or bad)
I_SCORE = 6  # the model's score at the statement (None: the model was not warm)
I_X = 7  # the feature values at the statement, kept until the outcome is known (point-in-time learning): packed()
Instalment = list[Any]

FIELDS = {
    "id": "account id",
    "cur": "currency of the line",
    "opened": "event time the line opened (ms)",
    "limit": "contractual credit limit (minor units)",
    "cap": "limit in force after this monitor's actions (minor units)",
    "bal": "drawn balance (minor units)",
    "ts": "account clock: latest event time applied (ms)",
    "inst": "open instalments (see Instalment)",
    "rdpd": "days past due last reported by the servicing ledger",
    "rts": "event time of that report (ms)",
    "dpd": "current days past due",
    "max_dpd": "worst days past due seen",
    "late": "instalments settled after their due date",
    "missed": "instalments whose due date passed unpaid in full",
    "partial": "instalments partly paid when their due date passed",
    "on_time": "instalments settled by their due date",
    "streak": "consecutive instalments settled on time",
    "last_ok": "event time of the last on-time settlement (ms)",
    "v": "time-decayed counters, layout in models.velocity.COUNTERS",
    "status": "early-warning state (models.vocabulary.STATES)",
    "since": "event time of the last state change (ms)",
    "good": "on-time settlements since the last escalation",
    "score": "latest probability of default",
    "ids": "fingerprints of the most recent event ids (duplicate deliveries), 8 characters each, newest last",
    "n": "events applied",
    "hold": "present while a tripped breaker holds a move: [target status, event time held (ms), held decision id]",
    "a": "the feature specification's aggregates (models.featurespec: layout by the spec)",
    "fs": "fingerprint of the specification whose layout 'a' follows (another one starts 'a' afresh)",
    "cb": "balance of the linked current account (minor units, negative when overdrawn); null until known",
    "line": "1 once the credit line is open; 0 for a current account whose line has not opened yet",
    "pend": "instalments paid in good time whose outcome waits for the end of their performance window: "
            "[due date (ms), score at the statement, features at the statement (packed())]",
}


class AccountState(TypedDict):
    id: str
    cur: str
    opened: int
    limit: int
    cap: int
    bal: int
    ts: int
    inst: list[Instalment]
    rdpd: int
    rts: int
    dpd: int
    max_dpd: int
    late: int
    missed: int
    partial: int
    on_time: int
    streak: int
    last_ok: int
    v: list[float]
    status: str
    since: int
    good: int
    score: float
    ids: str  # (a state saved before 2026-12-08 holds a list of 63-bit ints: seen() and remember() take both)
    n: int
    a: list[Any]
    fs: int
    cb: float | None
    line: int
    hold: NotRequired[list[Any]]
    # A reviewer's decision in force (riskmon.models.step._review): [until (event time), the state it set,
    # missed instalments then, arrears bucket then]; gone once it lapses or the arrears grow.
    rv: NotRequired[list[Any]]
    # Good outcomes waiting to be learned (riskmon.models.step._age): a bad one is known only once its
    # instalment is bad_dpd days late, so a good one is held until then too, and the model learns each
    # statement cohort whole rather than its good half a month early.
    pend: NotRequired[list[list[Any]]]
    # While a candidate policy is in shadow (riskmon.models.shadow): the state it would have the line in,
    # which nothing live reads.
    sh: NotRequired[list[Any]]


def new_state(account_id: str, currency: str, opened_ts: int, limit: int, spec: FeatureSpec | None = None,
              line: bool = True) -> AccountState:
    """The state of a line that has just opened (``line=False``: a current account whose line has not)."""
    return AccountState(
        id=account_id, cur=currency, opened=opened_ts, limit=limit, cap=limit, bal=0,
        ts=opened_ts, inst=[], rdpd=0, rts=opened_ts, dpd=0, max_dpd=0, late=0,
        missed=0, partial=0, on_time=0, streak=0, last_ok=opened_ts,
        v=[0.0] * len(COUNTERS), status=STATES[0].name, since=opened_ts, good=0,
        score=0.0, ids="", n=0, a=(spec or default_spec()).new_state(), fs=(spec or default_spec()).fingerprint,
        cb=None, line=1 if line else 0,
    )


def upgrade(s: AccountState, spec: FeatureSpec) -> AccountState:
    """A state saved before the declared features, or under another specification: its aggregates start
    afresh (they rebuild over their windows); everything else is kept. ``s`` itself is not changed."""
    c = copy_state(s) if "a" in s else AccountState(**{**s, "a": []})
    c["a"] = spec.new_state()
    c["fs"] = spec.fingerprint
    c.setdefault("cb", None)
    c.setdefault("line", 1)
    return c


def copy_state(s: AccountState) -> AccountState:
    """A copy deep enough that the step function never mutates its input (unless the caller gives it up)."""
    c = s.copy()
    c["inst"] = [list(i) for i in s["inst"]]
    c["v"] = list(s["v"])
    c["a"] = list(s["a"])
    if "pend" in s:
        c["pend"] = list(s["pend"])
    return c


# -- duplicate deliveries ------------------------------------------------------
# The last RECENT_IDS event ids of an account, each as the first 48 bits of its BLAKE2b-64 hash in 8
# URL-safe base64 characters, in one string: 128 bytes where sixteen 63-bit integers took 326 in JSON.
# A good event is taken for a duplicate only if its fingerprint equals one of its own account's last 16:
# 16 / 2**48 per event, once in some 1,700 years at ten billion events a year.
RECENT_IDS = 16
FP_CHARS = 8


def fingerprint(event_id: str) -> str:
    """An event id's fingerprint (8 characters).

    >>> fingerprint("e-1"), len(fingerprint("x" * 1000))
    ('MXOGSUvx', 8)
    """
    return urlsafe_b64encode(hashlib.blake2b(event_id.encode(), digest_size=8).digest()[:6]).decode()


def _legacy(ids: list[int]) -> str:
    # A 63-bit hash was the same digest's first 63 bits: its first 48 are the fingerprint.
    return "".join(urlsafe_b64encode((h >> 15).to_bytes(6, "big")).decode() for h in ids)


def seen(ids: str | list[int], fp: str) -> bool:
    """Whether ``fp`` is one of the fingerprints in ``ids`` (at a fingerprint's place, not across two)."""
    if not isinstance(ids, str):
        ids = _legacy(ids)
    i = ids.find(fp)
    while i > 0 and i % FP_CHARS:
        i = ids.find(fp, i + 1)
    return i >= 0


def remember(ids: str | list[int], fp: str) -> str:
    """``ids`` with ``fp`` added as the newest, the oldest dropped beyond :data:`RECENT_IDS`.

    >>> ids = ""
    >>> for k in range(20): ids = remember(ids, fingerprint(f"e-{k}"))
    >>> len(ids), seen(ids, fingerprint("e-19")), seen(ids, fingerprint("e-4")), seen(ids, fingerprint("e-3"))
    (128, True, True, False)
    """
    if not isinstance(ids, str):
        ids = _legacy(ids)
    ids += fp
    return ids if len(ids) <= RECENT_IDS * FP_CHARS else ids[-RECENT_IDS * FP_CHARS:]


# -- features kept for learning --------------------------------------------------
# A statement's features wait in the state until the outcome is known (I_X, and "pend"), rounded to 4
# decimals (features.rounded). As a JSON list one such vector took about 300 bytes; packed, each value is
# its 4-decimal fixed point as a zigzag varint, the bytes in URL-safe base64: about 150, and exactly the
# same values back. A vector with a value that is not finite or not within +-1e11 (beyond 2**53 in fixed
# point) stays a list.
_PACK_LIMIT = 1e11


def packed(x: list[float]) -> list[float] | str:
    """``x`` (already rounded to 4 decimals) as kept in the state; :func:`unpacked` gives it back.

    >>> packed([0, 1, 0.25, -3.1416])
    'AKCcAYgn7-oD'
    >>> unpacked(packed([0, 1, 0.25, -3.1416]))
    [0, 1, 0.25, -3.1416]
    >>> packed([1.5, float("inf")])
    [1.5, inf]
    """
    out = bytearray()
    for f in x:
        if not f:
            out.append(0)
            continue
        if not -_PACK_LIMIT < f < _PACK_LIMIT:
            return list(x)
        n = round(f * 10000)
        z = n << 1 if n >= 0 else (~n << 1) | 1
        while z > 0x7F:
            out.append(z & 0x7F | 0x80)
            z >>= 7
        out.append(z)
    return urlsafe_b64encode(out).rstrip(b"=").decode()


def unpacked(p: list[float] | str) -> list[float]:
    """The features :func:`packed` kept (a list as it is: a vector it could not pack, or a state saved
    before packing): 4-decimal floats, whole numbers as ints, as :func:`riskmon.models.features.rounded`
    gave them."""
    if not isinstance(p, str):
        return p
    out: list[float] = []
    z = shift = 0
    for byte in urlsafe_b64decode(p + "=" * (-len(p) % 4)):
        z |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        n = ~(z >> 1) if z & 1 else z >> 1
        out.append(n // 10000 if n % 10000 == 0 else n / 10000)
        z = shift = 0
    return out
