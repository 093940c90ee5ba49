"""Personal data as it may be shown, and the disclosure policy: who is told what (pure).

Masking: enough to tell people apart, not to identify them. Used wherever a
resident's or staff member's name or phone leaves the registry: ``sensord
registry show``, the contacts in work-order notices, and the log redaction
filter (``sensord/logs.py``) as a safety net.

The policy (:data:`DISCLOSURE`): for each recipient role of a work-order
notice, how precisely it learns where a home is, whether it gets the
residents' names and phones (in full, masked or not at all) and their tags.
``core/orders/notices.py`` applies it; docs/security.md ("Disclosure") shows it
as :func:`disclosure_table` renders it, and a unit test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Level = Literal["building", "floor", "flat"]
LEVELS: tuple[Level, ...] = ("building", "floor", "flat")  # coarse to fine
Contacts = Literal["full", "masked", "none"]
UNROUTED = "unrouted"  # a recipient whose organisation did not resolve
OTHER = "other"  # a role the policy does not name
# Field names that carry personal data: never logged (logs.py masks them as a safety net).
PERSONAL_FIELDS = ("name", "phone", "contacts", "tags", "label")


def mask_name(name: str) -> str:
    """张小明 -> 张*明, 张明 -> 张*: enough to tell people apart, not to identify them."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """13812341234 -> 138****1234; 021-12345678 -> 021*****5678."""
    if len(phone) < 8:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


@dataclass(frozen=True, slots=True)
class Disclosure:
    """What one recipient role is told of a home and of the people living there.

    ``as_owner`` / ``notified``: how precisely a dwelling is located for the
    order's owner and for a party only told (or a previous owner): ``flat``
    (building, floor, the flat's label and the ids that lead to it: address and
    device), ``floor`` (building and floor) or ``building`` (compound and
    building). ``contacts``: the residents' names and phones. ``tags``: the
    residents' tags and the count derived from them (``elderly_living_alone``).
    """

    as_owner: Level
    notified: Level
    contacts: Contacts
    tags: bool
    why: str

    def level(self, owner: bool) -> Level:
        """How precisely this recipient learns where the home is."""
        return self.as_owner if owner else self.notified


def _calls_on_residents(why: str) -> Disclosure:
    return Disclosure("flat", "flat", "full", True, why)


DISCLOSURE: Mapping[str, Disclosure] = {
    "grid_worker": _calls_on_residents(
        "visits and calls the residents; the tags say who cannot get out alone"
    ),
    "residents_committee": _calls_on_residents(
        "calls on its residents and keeps the list of vulnerable residents itself"
    ),
    "ops_centre": _calls_on_residents(
        "coordinates the rescue and must tell the fire brigade who is inside and who needs help"
    ),
    "ops_workstation": Disclosure(
        "flat", "flat", "masked", False,
        "the street's dispatch desk sends people to the door; calls to residents go through "
        "the ops centre",
    ),
    "district_office": Disclosure(
        "building", "building", "masked", False,
        "supervises and takes breaches at the top of the escalation chain: it pushes the "
        "parties that go to the door (they see the flat), never goes itself",
    ),
    "property_company": Disclosure(
        "flat", "building", "masked", False,
        "owns smoke alarms in homes without vulnerable residents and must send someone to the "
        "door; only told (e-bike charging at home, the grid worker's), the building is enough",
    ),
    "owners_committee": Disclosure(
        "building", "building", "none", False,
        "residents themselves, i.e. neighbours: told that something happens in the building, "
        "never where or to whom",
    ),
    "elevator_vendor": Disclosure(
        "building", "building", "masked", False,
        "works on elevators (a shared place, given in full); has no business in a home",
    ),
    "maintainer": Disclosure(
        "flat", "building", "masked", False,
        "changes detectors and batteries inside the home, so as owner it needs the door",
    ),
    "device_vendor": Disclosure(
        "flat", "building", "masked", False,
        "as the maintainer (the device's maintainer is usually its vendor)",
    ),
    "enforcement": Disclosure(
        "flat", "building", "masked", False,
        "acts on a household's repeated offence, so as owner it needs the door; tags are "
        "about care, not offences",
    ),
    UNROUTED: Disclosure(
        "building", "building", "masked", False,
        "…/dispatch/unrouted names no organisation, so anyone allowed to subscribe reads it; "
        "the operator looks the order up on the host (`sensord orders show`)",
    ),
    OTHER: Disclosure(
        "building", "building", "masked", False,
        "a role this table does not name (a new organisation type) gets the least until "
        "someone decides",
    ),
}  # fmt: skip


def disclosure_for(role: str, org_id: str | None) -> Disclosure:
    """The policy for a recipient: its role's row; an unresolved organisation is ``unrouted``
    whatever its role (nobody in particular is listening); an unknown role is ``other``."""
    if org_id is None:
        return DISCLOSURE[UNROUTED]
    return DISCLOSURE.get(role, DISCLOSURE[OTHER])


def at_least(level: Level, wanted: Level) -> bool:
    """Whether ``level`` is as precise as ``wanted``."""
    return LEVELS.index(level) >= LEVELS.index(wanted)


def disclosure_table() -> str:
    """:data:`DISCLOSURE` as the Markdown table of docs/security.md."""
    lines = [
        "| recipient role | a home, to the owner | a home, to others told | names, phones "
        "| tags | why |",
        "|---|---|---|---|---|---|",
    ]
    for role, rule in DISCLOSURE.items():
        name = f"`{role}`" if role not in (UNROUTED, OTHER) else f"*{role}*"
        lines.append(
            f"| {name} | {rule.as_owner} | {rule.notified} | {rule.contacts} "
            f"| {'yes' if rule.tags else 'no'} | {rule.why} |"
        )
    return "\n".join(lines) + "\n"
