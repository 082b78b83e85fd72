"""Compensation credits: money an operator owes an account after an incident, journaled with
the incident id and a reason, and idempotent per (incident, account, asset).

Paradex, Jan 2026, refunded ~$650k to ~200 traders after auditing each account. Applying the
same compensation report twice (a retried request, an operator re-running the command, a
replay) must credit once: the key is kept in the state (``EngineState.credited``), so the
rule holds across restarts and replays; the repeat answers ``Credited(duplicate=True)`` and
moves nothing.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.accounts import amount_of, credit
from bastion.core.rules import Refused
from bastion.core.venue import Venue

#: incident ids are short operator labels, not documents
MAX_INCIDENT = 64
MAX_REASON = 500


def credit_cmd(v: Venue, cmd: C.Credit, out: list[E.Event]) -> None:
    v.asset(cmd.asset)
    acct = v.account(cmd.account)
    amount = amount_of(cmd.amount)
    incident, reason = cmd.incident, cmd.reason
    if not isinstance(incident, str) or not incident.strip() or len(incident) > MAX_INCIDENT:
        raise Refused(X.INVALID_ARGUMENT, f"incident must be 1..{MAX_INCIDENT} characters")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise Refused(X.INVALID_ARGUMENT, f"a credit needs a reason (1..{MAX_REASON} characters)")
    key = (incident, acct.account, cmd.asset)
    if key in v.credited:
        out.append(E.Credited(seq=v.seq, ts=v.ts, account=acct.account, asset=cmd.asset,
                              amount=0, incident=incident, duplicate=True))
        return
    before = acct.available.get(cmd.asset, 0)
    credit(v, acct, cmd.asset, amount, "compensation", f"{incident}: {reason}", out)
    v.credited.add(key)
    assert acct.available[cmd.asset] == before + amount
    out.append(E.Credited(seq=v.seq, ts=v.ts, account=acct.account, asset=cmd.asset,
                          amount=amount, incident=incident))
