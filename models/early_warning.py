"""The early-warning state machine: rules and score -> the line's next state.

normal -> watch -> limit_reduced -> frozen -> closed, escalating at once to the
most severe state any rule calls for; back down only when every rule is quiet
at its *exit* level (lower than its entry level: no flapping on a score that
hovers at a threshold), the cool-down has passed, there are no arrears, and the
account has settled enough instalments on time since the last escalation.
"""
from __future__ import annotations

from .decisions import Reason
from .dpd import DAY_MS, bucket
from .features import FEATURE_NAMES, FEATURE_TEXT
from .policy import Policy
from .state import SEVERITY, STATUSES, AccountState
from .velocity import INDEX

__all__ = ["ESCALATION_ACTIONS", "fired_rules", "next_state", "action_for", "score_drivers"]

ESCALATION_ACTIONS = {1: "warning", 2: "limit_reduction", 3: "freeze", 4: "closure"}
_DPD_CODE = {"1-30": "DPD_1_30", "31-60": "DPD_31_60", "61-90": "DPD_61_90", "90+": "DPD_90_PLUS"}
_I_DD1, _I_DD24 = INDEX["drawdowns_1h"], INDEX["drawdowns_24h"]
_I_LR24, _I_LATE = INDEX["limit_requests_24h"], INDEX["late_180d"]
_I_DUE, _I_PAID = INDEX["due_90d"], INDEX["paid_90d"]


def fired_rules(p: Policy, s: AccountState, score: float, model_ready: bool, leaving: bool) -> list[Reason]:
    """Every rule that fires on ``s``; with ``leaving`` the exit levels apply."""
    t = p.thresholds
    out: list[Reason] = []
    dpd = s["dpd"]
    if dpd >= t["dpd.watch"]:
        sev = 4 if dpd >= t["dpd.close"] else 3 if dpd >= t["dpd.freeze"] else 2 if dpd >= t["dpd.limit"] else 1
        out.append(Reason(_DPD_CODE[bucket(dpd)], f"{dpd} days past due ({bucket(dpd)} bucket)", sev))
    if model_ready:
        sfx = "_exit" if leaving else ""
        if score >= t["score.close"] and dpd >= t["score.close_min_dpd"]:
            out.append(Reason("SCORE_CLOSE", f"risk score {score:.2f} >= {t['score.close']:.2f} with {dpd} days past due", 4))
        else:
            for sev, level in ((3, "freeze"), (2, "limit"), (1, "watch")):
                bar = t[f"score.{level}{sfx}"]
                if score >= bar:
                    out.append(Reason(f"SCORE_{level.upper()}", f"risk score {score:.2f} >= {bar:.2f}", sev))
                    break
    f = t["velocity.exit_factor"] if leaving else 1.0
    v = s["v"]
    limit = max(s["limit"], 1)
    util = s["bal"] / limit
    if v[_I_DD24] >= t["velocity.bust_out_drawdowns_24h"] * f and util >= t["velocity.bust_out_utilisation"]:
        out.append(Reason("BUST_OUT", f"{v[_I_DD24]:.1f} drawdowns in a day with utilisation at {util:.0%}", 3))
    if v[_I_DD1] >= t["velocity.drawdowns_1h_watch"] * f:
        out.append(Reason("DRAWDOWN_VELOCITY_1H", f"{v[_I_DD1]:.1f} drawdowns in the last hour", 1))
    elif v[_I_DD24] >= t["velocity.drawdowns_24h_watch"] * f:
        out.append(Reason("DRAWDOWN_VELOCITY_24H", f"{v[_I_DD24]:.1f} drawdowns in the last day", 1))
    if v[_I_LR24] >= t["velocity.limit_requests_24h_watch"] * f:
        out.append(Reason("LIMIT_REQUEST_VELOCITY", f"{v[_I_LR24]:.1f} limit requests in the last day", 1))
    if util >= t["utilisation.watch_exit" if leaving else "utilisation.watch"]:
        out.append(Reason("HIGH_UTILISATION", f"utilisation at {util:.0%} of the limit", 1))
    if v[_I_LATE] >= t["behaviour.late_180d_watch"]:
        out.append(Reason("REPEATED_LATE", f"{v[_I_LATE]:.1f} late or missed instalments (180-day decayed)", 1))
    due = v[_I_DUE]
    if due > 100:
        ratio = v[_I_PAID] / due
        if ratio < t["behaviour.payment_to_due_exit" if leaving else "behaviour.payment_to_due_watch"]:
            out.append(Reason("LOW_PAYMENT_RATIO", f"paid {ratio:.0%} of what fell due (90-day decayed)", 1))
    out.sort(key=lambda r: -r.severity)
    return out


def next_state(
    p: Policy, s: AccountState, score: float, model_ready: bool
) -> tuple[str, list[Reason]] | None:
    """The state ``s`` should move to and why, or None to stay."""
    cur = SEVERITY[s["status"]]
    entry = fired_rules(p, s, score, model_ready, leaving=False)
    target = entry[0].severity if entry else 0
    if target > cur:
        return STATUSES[target], entry
    if cur == 0:
        return None
    staying = fired_rules(p, s, score, model_ready, leaving=True)
    floor = staying[0].severity if staying else 0
    if floor >= cur or s["dpd"] > 0:
        return None
    t = p.thresholds
    severe = cur >= SEVERITY["frozen"]
    cooldown = t["recovery.reopen_cooldown_days" if severe else "recovery.clear_cooldown_days"]
    needed = t["recovery.reopen_good_payments" if severe else "recovery.clear_good_payments"]
    days = (s["ts"] - s["since"]) / DAY_MS
    if days < cooldown or s["good"] < needed:
        return None
    why = Reason(
        "REOPEN_GOOD_BEHAVIOUR" if severe else "CLEAR_GOOD_BEHAVIOUR",
        f"{s['good']} on-time settlements and no arrears in {days:.0f} days since the last action; score {score:.2f}",
        0,
    )
    return STATUSES[floor], [why, *staying]


def action_for(previous: str, new: str) -> str:
    """The decision's action for a move between states.

    >>> action_for("normal", "frozen"), action_for("closed", "watch"), action_for("watch", "normal")
    ('freeze', 'reopen', 'clear')
    """
    a, b = SEVERITY[previous], SEVERITY[new]
    if b > a:
        return ESCALATION_ACTIONS[b]
    return "reopen" if a >= SEVERITY["frozen"] else "clear"


def score_drivers(contributions: dict[str, float], top: int = 3, floor: float = 0.1) -> list[Reason]:
    """The features that pushed the score up most, as reasons.

    >>> [r.code for r in score_drivers({"dpd_months": 1.2, "utilisation": 0.3, "on_time_streak": -2.0})]
    ['DRIVER_DPD_MONTHS', 'DRIVER_UTILISATION']
    """
    ranked = sorted(((c, k) for k, c in contributions.items() if c >= floor), reverse=True)[:top]
    return [
        Reason(f"DRIVER_{k.upper()}", f"{FEATURE_TEXT[k]} raised the risk score (+{c:.2f} log-odds)", 0)
        for c, k in ranked
        if k in FEATURE_NAMES
    ]
