"""The versioned early-warning policy: thresholds a risk team owns.

Loaded from TOML (``models/data/default_policy.toml`` is the default) and
replaced at an event-time point by a ``policy_update`` control event whose
``thresholds`` name keys as ``"section.name"`` (or nested objects).

>>> p = default_policy()
>>> p.version, p.dpd.close, p.value("dpd.close")
('default-2026.1', 121, 121)
>>> p.updated({"score.watch": 0.4}, "tight-1").value("score.watch")
0.4
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RejectReason, Rejected
from .vocabulary import GUARDABLE

__all__ = [
    "ArrearsRules", "BehaviourRules", "BreakerRules", "DpdRules", "Policy", "RecoveryRules", "ScoreRules", "UtilisationRules",
    "VelocityRules", "default_policy", "load_policy",
]


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# One frozen dataclass per section of the TOML file: a misspelt threshold in code is a type
# error, and a misspelt key in a file or a policy update is a typed rejection. Values keep
# the type the file gave them (an int stays an int), as the decisions' texts print them.
@dataclass(frozen=True, slots=True)
class DpdRules:
    """Days past due -> action (buckets 1-30, 31-60, 61-90, 90+)."""

    watch: float
    limit: float
    freeze: float
    close: float


@dataclass(frozen=True, slots=True)
class ScoreRules:
    """Probability of default -> action, with exit levels below the entry levels (hysteresis)."""

    min_labels: float
    watch: float
    watch_exit: float
    limit: float
    limit_exit: float
    freeze: float
    freeze_exit: float
    close: float
    close_min_dpd: float


@dataclass(frozen=True, slots=True)
class VelocityRules:
    drawdowns_1h_watch: float
    drawdowns_24h_watch: float
    limit_requests_24h_watch: float
    bust_out_drawdowns_24h: float
    bust_out_utilisation: float
    exit_factor: float


@dataclass(frozen=True, slots=True)
class UtilisationRules:
    watch: float
    watch_exit: float


@dataclass(frozen=True, slots=True)
class BehaviourRules:
    late_180d_watch: float
    payment_to_due_watch: float
    payment_to_due_exit: float


@dataclass(frozen=True, slots=True)
class RecoveryRules:
    clear_cooldown_days: float
    clear_good_payments: float
    reopen_cooldown_days: float
    reopen_good_payments: float
    limit_reduction_floor: float


@dataclass(frozen=True, slots=True)
class ArrearsRules:
    """When an instalment counts as met: what is left unpaid is immaterial."""

    materiality_share: float  # an unpaid remainder at most this share of the instalment settles it


@dataclass(frozen=True, slots=True)
class ReviewRules:
    """What a reviewer's decision on an account (a ``review`` event) holds off."""

    protect_days: float  # no automatic escalation beyond the reviewed state for this long, unless arrears grow


@dataclass(frozen=True, slots=True)
class BreakerRules:
    """The mass-action breaker (models/breaker.py); one 0/1 switch per guardable action."""

    closure: float
    limit_reduction: float
    window_hours: float
    baseline_days: float
    multiple: float
    max_share: float
    min_count: float

    def guards(self, action: str) -> bool:
        return action in GUARDABLE and getattr(self, action) >= 1


_REVIEW_BEFORE = ReviewRules(protect_days=30.0)  # what a policy saved before the section reads

_SECTIONS: dict[str, type[Any]] = {
    "dpd": DpdRules, "score": ScoreRules, "velocity": VelocityRules, "utilisation": UtilisationRules,
    "behaviour": BehaviourRules, "recovery": RecoveryRules, "arrears": ArrearsRules, "breaker": BreakerRules,
    "review": ReviewRules,
}


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy version: one typed section per part of the rules."""

    version: str
    dpd: DpdRules
    score: ScoreRules
    velocity: VelocityRules
    utilisation: UtilisationRules
    behaviour: BehaviourRules
    recovery: RecoveryRules
    arrears: ArrearsRules
    breaker: BreakerRules
    review: ReviewRules

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    def __setstate__(self, state: list[Any]) -> None:
        """Also a policy pickled (in a partition's snapshot) before the review section: it takes the
        section's shipped value, as a policy file that does not name a key does."""
        names = [f.name for f in fields(self)]
        values = list(state)
        if len(values) == len(names) - 1 and names[-1] == "review":
            values.append(_REVIEW_BEFORE)
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def from_flat(cls, version: str, flat: dict[str, Any]) -> Policy:
        """A policy from ``{"section.name": value}``, every key of every section present."""
        sections = {}
        for section, kind in _SECTIONS.items():
            names = [f.name for f in fields(kind)]
            missing = [f"{section}.{n}" for n in names if f"{section}.{n}" not in flat]
            if missing:
                raise Rejected(RejectReason.BAD_POLICY, f"missing policy keys: {', '.join(missing[:5])}")
            sections[section] = kind(**{n: flat[f"{section}.{n}"] for n in names})
        unknown = sorted(set(flat) - {f"{s}.{f.name}" for s, k in _SECTIONS.items() for f in fields(k)})
        if unknown:
            raise Rejected(RejectReason.BAD_POLICY, f"unknown policy keys: {', '.join(k[:40] for k in unknown[:5])}")
        return cls(version, **sections)

    @property
    def thresholds(self) -> dict[str, float]:
        """Every threshold as ``{"section.name": value}``, in the file's order."""
        return {f"{s}.{f.name}": getattr(getattr(self, s), f.name) for s, kind in _SECTIONS.items() for f in fields(kind)}

    def value(self, key: str) -> float:
        return self.thresholds[key]

    def updated(self, changes: dict[str, Any], version: str) -> Policy:
        """A new version with ``changes`` applied; :class:`Rejected` if they are not valid."""
        flat = _flatten(changes)
        current = self.thresholds
        unknown = sorted(set(flat) - set(current))
        if unknown:
            raise Rejected(RejectReason.BAD_POLICY, f"unknown policy keys: {', '.join(k[:40] for k in unknown[:5])}")
        for k, v in flat.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                raise Rejected(RejectReason.BAD_POLICY, f"policy key {k!r} must be a finite number")
        by_section: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            section, name = k.split(".", 1)
            by_section.setdefault(section, {})[name] = v
        policy = dataclasses.replace(
            self, version=version,
            **{s: dataclasses.replace(getattr(self, s), **names) for s, names in by_section.items()},
        )
        policy.validate()
        return policy

    def validate(self) -> None:
        d, sc, u, v, b = self.dpd, self.score, self.utilisation, self.velocity, self.breaker
        problems = []
        if not d.watch <= d.limit <= d.freeze <= d.close:
            problems.append("dpd thresholds must rise: watch <= limit <= freeze <= close")
        if not sc.watch <= sc.limit <= sc.freeze <= sc.close:
            problems.append("score thresholds must rise: watch <= limit <= freeze <= close")
        for level, entry, exit_ in (("watch", sc.watch, sc.watch_exit), ("limit", sc.limit, sc.limit_exit),
                                    ("freeze", sc.freeze, sc.freeze_exit)):
            if not 0 <= exit_ <= entry <= 1:
                problems.append(f"score.{level}_exit must be in 0..score.{level} <= 1 (hysteresis)")
        if not u.watch_exit <= u.watch:
            problems.append("utilisation.watch_exit must not exceed utilisation.watch")
        if not self.behaviour.payment_to_due_watch <= self.behaviour.payment_to_due_exit:
            problems.append("behaviour.payment_to_due_exit must not be below behaviour.payment_to_due_watch (hysteresis: "
                            "the rule fires below its level)")
        if not 0 <= self.review.protect_days <= 3650:
            problems.append("review.protect_days must be in 0..3650")
        if not 0 <= self.arrears.materiality_share < 0.5:
            problems.append("arrears.materiality_share must be in [0, 0.5)")
        if not 0 < v.exit_factor <= 1:
            problems.append("velocity.exit_factor must be in (0, 1]")
        for action in GUARDABLE:
            if getattr(b, action) not in (0, 1):
                problems.append(f"breaker.{action} must be 0 (not guarded) or 1 (guarded)")
        if not (b.window_hours >= 1 and b.multiple >= 1 and 0 < b.max_share <= 1 and b.min_count >= 1):
            problems.append("breaker: window_hours >= 1, multiple >= 1, 0 < max_share <= 1, min_count >= 1")
        if any(x < 0 for x in self.thresholds.values()):
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
    policy = Policy.from_flat(_version(doc, "default_policy.toml"), _flatten(doc))
    policy.validate()
    return policy


_DEFAULT = _load_default()
