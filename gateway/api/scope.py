"""Who sees what of the gateway as a whole: the one check, asked from every view that needs it.

A crew member sees their own work: their envelopes and rejections, the
files they uploaded. Gateway-wide figures (backhaul, disk, counts by state)
are for everyone on the site. A site lead sees every crew member's work.
"""

from __future__ import annotations

from gateway.auth import Principal


def sees_whole_gateway(principal: Principal) -> bool:
    """May ``principal`` see other crew members' envelopes, rejections and files?

    The site-lead role (granted centrally per gateway, pushed with the users)
    answers True here; a push that takes it away clears the principal cache.
    """
    return principal.site_lead
