"""The published JSON Schemas (``models/schemas``), where they take lists from the code.

The enums a schema carries (decision actions and states from
:mod:`riskmon.models.vocabulary`, the breaker's actions, the ISO 4217
currencies, the cash-flow kinds) are derived here; ``python -m
riskmon.models.contract`` rewrites them in the files, and a test fails while a
file and the code disagree.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .events import CASH_FLOW_KINDS, CURRENCIES, MODEL_COMMANDS, REVIEW_OUTCOMES, SHADOW_COMMANDS
from .vocabulary import ACTIONS, GUARDABLE, LEARNERS, STATUSES

__all__ = ["SCHEMAS", "schema_enums", "write_schemas"]

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def schema_enums(folder: Path = SCHEMAS) -> dict[str, dict[str, list[str]]]:
    """The enums each published schema takes from the code: file -> property -> values."""
    out: dict[str, dict[str, list[str]]] = {
        "decision.json": {"action": list(ACTIONS), "previous_state": list(STATUSES), "new_state": list(STATUSES)},
        "breaker_command.json": {"action": list(GUARDABLE)},
        "review.json": {"outcome": list(REVIEW_OUTCOMES), "state": list(STATUSES)},
        "model_command.json": {"command": list(MODEL_COMMANDS), "learner": list(LEARNERS)},
        "policy_update.json": {"shadow": list(SHADOW_COMMANDS)},
    }
    for type_, kinds in CASH_FLOW_KINDS.items():
        out.setdefault(f"{type_}.json", {})["kind"] = list(kinds)
    for path in sorted(folder.glob("*.json")):
        if "currency" in json.loads(path.read_text())["properties"]:
            out.setdefault(path.name, {})["currency"] = sorted(CURRENCIES)
    return out


def write_schemas(folder: Path = SCHEMAS) -> list[str]:
    """Rewrite the enums of the published schemas in ``folder`` from the code; the files changed."""
    changed = []
    for name, props in schema_enums(folder).items():
        path = folder / name
        doc: dict[str, Any] = json.loads(path.read_text())
        before = json.dumps(doc)
        for prop, values in props.items():
            doc["properties"][prop]["enum"] = values
        if json.dumps(doc) != before:
            path.write_text(json.dumps(doc, indent=2) + "\n")
            changed.append(name)
    return changed


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    changed = write_schemas()
    print(f"rewrote {', '.join(changed)}" if changed else "schemas already match the code", file=sys.stderr)
