"""The versioned early-warning policy: thresholds a risk team owns.

Loaded from TOML (``models/data/default_policy.toml`` is the default) and
replaced at an event-time point by a ``policy_update`` control event whose
``thresholds`` name keys as ``"section.name"`` (or nested objects).

>>> p = default_policy()
>>> p.version, p.value("dpd.close")
('default-2025.1', 91)
>>> p.updated({"score.watch": 0.4}, "tight-1").value("score.watch")
0.4
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RejectReason, Rejected

__all__ = ["Policy", "default_policy", "load_policy"]


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy version: ``thresholds`` maps ``"section.name"`` to a number."""

    version: str
    thresholds: dict[str, float]

    def value(self, key: str) -> float:
        return self.thresholds[key]

    def updated(self, changes: dict[str, Any], version: str) -> Policy:
        """A new version with ``changes`` applied; :class:`Rejected` if they are not valid."""
        flat = _flatten(changes)
        unknown = sorted(set(flat) - set(self.thresholds))
        if unknown:
            raise Rejected(RejectReason.BAD_POLICY, f"unknown policy keys: {', '.join(k[:40] for k in unknown[:5])}")
        merged = dict(self.thresholds)
        for k, v in flat.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise Rejected(RejectReason.BAD_POLICY, f"policy key {k!r} must be a finite number")
            merged[k] = v
        policy = Policy(version, merged)
        policy.validate()
        return policy

    def validate(self) -> None:
        t = self.thresholds
        problems = []
        if not t["dpd.watch"] <= t["dpd.limit"] <= t["dpd.freeze"] <= t["dpd.close"]:
            problems.append("dpd thresholds must rise: watch <= limit <= freeze <= close")
        if not t["score.watch"] <= t["score.limit"] <= t["score.freeze"] <= t["score.close"]:
            problems.append("score thresholds must rise: watch <= limit <= freeze <= close")
        for level in ("watch", "limit", "freeze"):
            if not 0 <= t[f"score.{level}_exit"] <= t[f"score.{level}"] <= 1:
                problems.append(f"score.{level}_exit must be in 0..score.{level} <= 1 (hysteresis)")
        if not t["utilisation.watch_exit"] <= t["utilisation.watch"]:
            problems.append("utilisation.watch_exit must not exceed utilisation.watch")
        if not 0 < t["velocity.exit_factor"] <= 1:
            problems.append("velocity.exit_factor must be in (0, 1]")
        for flag in ("breaker.closure", "breaker.limit_reduction"):
            if t[flag] not in (0, 1):
                problems.append(f"{flag} must be 0 (not guarded) or 1 (guarded)")
        if not (t["breaker.window_hours"] >= 1 and t["breaker.multiple"] >= 1 and 0 < t["breaker.max_share"] <= 1
                and t["breaker.min_count"] >= 1):
            problems.append("breaker: window_hours >= 1, multiple >= 1, 0 < max_share <= 1, min_count >= 1")
        if any(v < 0 for v in t.values()):
            problems.append("thresholds must not be negative")
        if problems:
            raise Rejected(RejectReason.BAD_POLICY, "; ".join(problems))


def _version(doc: dict[str, Any], where: str) -> str:
    version = doc.pop("version", None)
    if not isinstance(version, str) or not version:
        raise Rejected(RejectReason.BAD_POLICY, f"{where}: a policy needs a top-level version string")
    return version


def load_policy(path: str | Path) -> Policy:
    """A policy from a TOML file: a top-level ``version`` and sections of numbers.

    Keys the file does not name keep the default policy's values.
    """
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Rejected(RejectReason.BAD_POLICY, f"{path}: {exc}") from None
    return _DEFAULT.updated(doc, _version(doc, str(path)))


def default_policy() -> Policy:
    """The shipped default policy."""
    return _DEFAULT


def _load_default() -> Policy:
    doc = tomllib.loads(resources.files(__package__ or "riskmon.models").joinpath("data/default_policy.toml").read_text("utf-8"))
    policy = Policy(_version(doc, "default_policy.toml"), _flatten(doc))
    policy.validate()
    return policy


_DEFAULT = _load_default()
