"""The routing policy resolved against the demo district's registry (issue 5, started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.adapters.registry_snapshot import load_snapshot
from sensord.core.orders.policy import parse_policy
from sensord.core.orders.routing import route
from sensord.core.rules.fields import context_fields
from sensord.errors import RuleError

pytestmark = pytest.mark.integration
ROUTES = parse_policy(
    (Path(__file__).resolve().parents[2] / "rules" / "routing.toml").read_text()
).routes


def test_every_device_and_category_routes_to_someone(demo_district: tuple[str, Path]) -> None:
    dsn, _ = demo_district
    snapshot = load_snapshot(dsn).snapshot
    kitchen_smoke = 0
    for context in snapshot.contexts.values():
        fields = context_fields(context)
        for category in ("fire", "device_offline", "elevator_entrapment", "fire_lane_blocked"):
            decision = route(ROUTES, category, context, fields)
            assert decision.owner.org_id is not None or decision.unrouted
        if context.device.kind == "smoke" and fields["place_type"] == "public_kitchen":
            decision = route(ROUTES, "fire", context, fields)
            assert not decision.unrouted
            kitchen_smoke += 1
            assert decision.owner.role == "property_company"
            # all three at once, as in the field
            assert {p.role for p in decision.notify} == {"ops_centre", "residents_committee"}
        offline = route(ROUTES, "device_offline", context, fields)
        if context.device.maintainer is not None:
            assert offline.owner.org_id == context.device.maintainer.org_id
    assert kitchen_smoke > 0


def test_no_context_goes_to_the_ops_centre_flagged() -> None:
    decision = route(ROUTES, "fire", None, {})
    assert decision.unrouted
    assert decision.owner.role == "ops_centre"


def test_a_bad_policy_lists_every_problem() -> None:
    bad = '[[route]]\ncategory = "gas"\nowner = "x"\n[[route]]\ncategory = "fire"\n[extra]\n'
    with pytest.raises(RuleError) as caught:
        parse_policy(bad)
    text = str(caught.value)
    assert "route #1: category" in text and "route #2: owner" in text and "extra" in text
