"""The registry fields a rule condition may use beside the reading's own (docs/rules.md)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sensord.core.context import DeviceContext

EMPTY: Mapping[str, Any] = MappingProxyType({})


def context_fields(context: DeviceContext | None) -> Mapping[str, Any]:
    """Place and residents of a device as condition fields; empty when it has no context."""
    if context is None:
        return EMPTY
    place = context.place
    residents = context.residents
    counts = dict(residents.tag_counts)
    return MappingProxyType(
        {
            "address_id": place.address_id if place else context.device.address_id,
            "place_type": place.place_type if place else None,
            "building_id": place.building.building_id if place and place.building else None,
            "street": context.device.street_id,
            "residents": residents.residents,
            "elderly": counts.get("elderly", 0),
            "living_alone": counts.get("living_alone", 0),
            "elderly_living_alone": residents.elderly_living_alone,
            "disabled": counts.get("disabled", 0),
            "bedridden": counts.get("bedridden", 0),
        }
    )
