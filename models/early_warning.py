"""The early-warning state machine: rules and score -> the line's next state.

normal -> watch -> limit_reduced -> frozen -> closed, escalating at once to the
most severe state any rule calls for; back down only when every rule is quiet
at its *exit* level (lower than its entry level: no flapping on a score that
hovers at a threshold), the cool-down has passed, there are no arrears, and the
account has settled enough instalments on time since the last escalation.
"""
from __future__ import annotations

from .decisions import Reason
from .dpd import bucket
from .featurespec import BUILTINS, FeatureSpec, default_spec
from .policy import Policy
from .state import AccountState
from .units import DAY_MS
from .velocity import INDEX
from .vocabulary import SEVERITY, STATES, STATUSES

__all__ = ["RULE_LEVELS", "fired_rules", "next_state", "score_drivers"]

_DPD_CODE = {"1-30": "DPD_1_30", "31-60": "DPD_31_60", "61-90": "DPD_61_90", "90+": "DPD_90_PLUS"}
_I_DD1, _I_DD24 = INDEX["drawdowns_1h"], INDEX["drawdowns_24h"]
_I_LR24, _I_LATE = INDEX["limit_requests_24h"], INDEX["late_180d"]
_I_DUE, _I_PAID = INDEX["due_90d"], INDEX["paid_90d"]


# Each rule's reason code -> the policy keys that set its levels (entry, then exit), for people reading reasons.
RULE_LEVELS: dict[str, tuple[str, ...]] = {
    "DPD_1_30": ("dpd.watch",), "DPD_31_60": ("dpd.limit",), "DPD_61_90": ("dpd.freeze",), "DPD_90_PLUS": ("dpd.close",),
    "SCORE_CLOSE": ("score.close", "score.close_min_dpd"), "SCORE_FREEZE": ("score.freeze", "score.freeze_exit"),
    "SCORE_LIMIT": ("score.limit", "score.limit_exit"), "SCORE_WATCH": ("score.watch", "score.watch_exit"),
    "BUST_OUT": ("velocity.bust_out_drawdowns_24h", "velocity.bust_out_utilisation"),
    "DRAWDOWN_VELOCITY_1H": ("velocity.drawdowns_1h_watch",), "DRAWDOWN_VELOCITY_24H": ("velocity.drawdowns_24h_watch",),
    "LIMIT_REQUEST_VELOCITY": ("velocity.limit_requests_24h_watch",),
    "HIGH_UTILISATION": ("utilisation.watch", "utilisation.watch_exit"),
    "REPEATED_LATE": ("behaviour.late_180d_watch",),
    "LOW_PAYMENT_RATIO": ("behaviour.payment_to_due_watch", "behaviour.payment_to_due_exit"),
    "CLEAR_GOOD_BEHAVIOUR": ("recovery.clear_cooldown_days", "recovery.clear_good_payments"),
    "REOPEN_GOOD_BEHAVIOUR": ("recovery.reopen_cooldown_days", "recovery.reopen_good_payments"),
}


def fired_rules(p: Policy, s: AccountState, score: float, model_ready: bool, leaving: bool) -> list[Reason]:
    """Every rule that fires on ``s``; with ``leaving`` the exit levels apply."""
    d, sc, vr, b = p.dpd, p.score, p.velocity, p.behaviour
    out: list[Reason] = []
    dpd = s["dpd"]
    if dpd >= d.watch:
        sev = 4 if dpd >= d.close else 3 if dpd >= d.freeze else 2 if dpd >= d.limit else 1
        out.append(Reason(_DPD_CODE[bucket(dpd)], f"{dpd} day{'' if dpd == 1 else 's'} past due ({bucket(dpd)} bucket)", sev))
    if model_ready:
        if score >= sc.close and dpd >= sc.close_min_dpd:
            out.append(Reason("SCORE_CLOSE", f"risk score {score:.2f} >= {sc.close:.2f} with {dpd} days past due", 4))
        else:
            levels = ((3, "FREEZE", sc.freeze_exit if leaving else sc.freeze),
                      (2, "LIMIT", sc.limit_exit if leaving else sc.limit),
                      (1, "WATCH", sc.watch_exit if leaving else sc.watch))
            for sev, level, bar in levels:
                if score >= bar:
                    out.append(Reason(f"SCORE_{level}", f"risk score {score:.2f} >= {bar:.2f}", sev))
                    break
    f = vr.exit_factor if leaving else 1.0
    v = s["v"]
    limit = max(s["limit"], 1)
    util = s["bal"] / limit
    if v[_I_DD24] >= vr.bust_out_drawdowns_24h * f and util >= vr.bust_out_utilisation:
        out.append(Reason("BUST_OUT", f"{v[_I_DD24]:.1f} drawdowns in a day with utilisation at {util:.0%}", 3))
    if v[_I_DD1] >= vr.drawdowns_1h_watch * f:
        out.append(Reason("DRAWDOWN_VELOCITY_1H", f"{v[_I_DD1]:.1f} drawdowns in the last hour", 1))
    elif v[_I_DD24] >= vr.drawdowns_24h_watch * f:
        out.append(Reason("DRAWDOWN_VELOCITY_24H", f"{v[_I_DD24]:.1f} drawdowns in the last day", 1))
    if v[_I_LR24] >= vr.limit_requests_24h_watch * f:
        out.append(Reason("LIMIT_REQUEST_VELOCITY", f"{v[_I_LR24]:.1f} limit requests in the last day", 1))
    if util >= (p.utilisation.watch_exit if leaving else p.utilisation.watch):
        out.append(Reason("HIGH_UTILISATION", f"utilisation at {util:.0%} of the limit", 1))
    if v[_I_LATE] >= b.late_180d_watch:
        out.append(Reason("REPEATED_LATE", f"{v[_I_LATE]:.1f} late or missed instalments (180-day decayed)", 1))
    due = v[_I_DUE]
    if due > 100:
        ratio = v[_I_PAID] / due
        if ratio < (b.payment_to_due_exit if leaving else b.payment_to_due_watch):
            out.append(Reason("LOW_PAYMENT_RATIO", f"paid {ratio:.0%} of what fell due (90-day decayed)", 1))
    if len(out) > 1:
        out.sort(key=_most_severe_first)
    return out


def _most_severe_first(r: Reason) -> int:
    return -r.severity


def next_state(
    p: Policy, s: AccountState, score: float, model_ready: bool
) -> tuple[str, list[Reason]] | None:
    """The state ``s`` should move to and why, or None to stay."""
    cur = SEVERITY[s["status"]]
    entry = fired_rules(p, s, score, model_ready, leaving=False)
    target = entry[0].severity if entry else 0
    if target > cur:
        return STATUSES[target], entry
    # Every exit level is at or beyond its entry level (Policy.validate), so a rule that fires on
    # entry fires on staying: at the current state's severity the line stays, unread further.
    if cur == 0 or target == cur or s["dpd"] > 0:
        return None
    staying = fired_rules(p, s, score, model_ready, leaving=True)
    floor = staying[0].severity if staying else 0
    if floor >= cur:
        return None
    r = p.recovery
    severe = STATES[cur].leave == "reopen"  # the longer cool-down and more good payments of a reopening
    cooldown = r.reopen_cooldown_days if severe else r.clear_cooldown_days
    needed = r.reopen_good_payments if severe else r.clear_good_payments
    days = (s["ts"] - s["since"]) / DAY_MS
    if days < cooldown or s["good"] < needed:
        return None
    why = Reason(
        "REOPEN_GOOD_BEHAVIOUR" if severe else "CLEAR_GOOD_BEHAVIOUR",
        f"{s['good']} on-time settlements and no arrears in {days:.0f} days since the last action; score {score:.2f}",
        0,
    )
    return STATUSES[floor], [why, *staying]



def score_drivers(contributions: dict[str, float], spec: FeatureSpec | None = None, top: int = 3,
                  floor: float = 0.1) -> list[Reason]:
    """The features that pushed the score up most, as reasons.

    >>> [r.code for r in score_drivers({"dpd_months": 1.2, "utilisation": 0.3, "on_time_streak": -2.0})]
    ['DRIVER_DPD_MONTHS', 'DRIVER_UTILISATION']
    """
    spec = spec or default_spec()
    texts = {**BUILTINS, **spec.texts}
    ranked = sorted(((c, k) for k, c in contributions.items() if c >= floor), reverse=True)[:top]
    return [
        Reason(f"DRIVER_{k.upper()}", f"{texts[k]} raised the risk score (+{c:.2f} log-odds)", 0)
        for c, k in ranked
        if k in texts
    ]
