"""Why central rejected an envelope: the codes of ``EnvelopeResult.code``.

Machine-readable and stable (a gateway and its crew, scripts and the admin
read them; the table in docs/central.md says what each means). Every place
that rejects an envelope names its code from here.
"""

from __future__ import annotations

# The rules of replay (cloud_bridge.bulk).
VALIDATION = "validation"  # the record or rows do not fit the form
CONFLICT = "conflict"  # edited from a stale version of the activity
PERMISSION = "permission"  # not checked out to this gateway, or an author who may not submit
UNKNOWN_ACTIVITY = "unknown_activity"  # central has no such activity
STALE_SEQ = "stale_seq"  # a seq already used in this check-out
CANCELED = "canceled"  # central canceled the activity
CHECKED_IN = "checked_in"  # held, and a completed envelope before it checked the activity in

# Envelopes central cannot apply at all, decided before the rules (cloud_bridge.intake).
INVALID_ENVELOPE = "invalid_envelope"  # fails the wire contract (a value out of its bounds)
UNSTORABLE = "unstorable"  # central's database refused a value in it
UNAPPLICABLE = frozenset({INVALID_ENVELOPE, UNSTORABLE})  # noted on the gateway's row too

# A rejection decided before the rules ran: (code, reason).
Refusal = tuple[str, str]
