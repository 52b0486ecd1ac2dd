"""Which partition an account's events land in: Kafka's default (murmur2) partitioner.

Replay shards accounts exactly as a Kafka producer with the default partitioner
does, so that replay and the stream give every account to the same shard model.

>>> partition_for("A0000001", 4) in range(4)
True
"""
from __future__ import annotations

__all__ = ["murmur2", "partition_for"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as in org.apache.kafka.common.utils.Utils.murmur2 (unsigned 32-bit)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(account_id: str, partitions: int) -> int:
    """The partition a record keyed by ``account_id`` goes to among ``partitions``."""
    return (murmur2(account_id.encode()) & 0x7FFFFFFF) % partitions
