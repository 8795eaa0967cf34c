"""A node group's scopes: one per user, keyed as Envoy keys requests, journalled per change."""

from __future__ import annotations

import pytest

from controlplane.xds import scopes
from controlplane.xds.naming import BALANCED_ROUTE_NAME
from controlplane.xds.scopes import ScopeTable, key_format, revision_of, user_key

LOBBY_1 = (("games/lobby", 1),)


def test_keys_are_what_envoys_early_header_mutation_writes() -> None:
    assert key_format(["x-uid"]) == "u%REQ(x-uid)%"
    assert user_key(["x-uid"], "x-uid", "alice") == "ualice"
    # Several uid headers: the values in header order, the other places empty.
    assert key_format(["x-player", "x-uid"]) == "u%REQ(x-player)% %REQ(x-uid)%"
    assert user_key(["x-player", "x-uid"], "x-uid", "alice") == "u alice"
    assert user_key(["x-player", "x-uid"], "x-player", "alice") == "ualice "


def test_requests_without_a_user_and_the_fallback_are_balanced_from_the_start() -> None:
    table = ScopeTable(["x-uid"], epoch="e")
    assert table.routes == {"u": BALANCED_ROUTE_NAME, "-": BALANCED_ROUTE_NAME}
    assert table.placements() == set()


def test_pointing_a_scope_counts_the_users_of_each_placement() -> None:
    table = ScopeTable(["x-uid"], epoch="e")
    assert table.point("ualice", LOBBY_1) is True
    assert table.point("ualice", LOBBY_1) is False  # no change, no revision
    table.point("ubob", LOBBY_1)
    assert table.revision == 2
    assert table.routes["ubob"] == "stateful-route:games/lobby=1"
    table.point("ualice", ())
    assert set(table.placements()) == {LOBBY_1}
    table.point("ubob", ())
    assert set(table.placements()) == set()
    assert "ubob" not in table.routes


def test_the_journal_names_what_changed_and_admits_when_it_does_not_reach_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scopes, "JOURNAL_LENGTH", 3)
    table = ScopeTable(["x-uid"], epoch="e")
    for uid in ("a", "b", "c", "d"):
        table.point(f"u{uid}", LOBBY_1)
    assert table.changed_since(4) == set()
    assert table.changed_since(2) == {"uc", "ud"}
    assert table.changed_since(1) == {"ub", "uc", "ud"}
    assert table.changed_since(0) is None  # the first change fell out: compare everything


def test_the_version_carries_the_revision_an_ack_names() -> None:
    table = ScopeTable(["x-uid"], epoch="e1")
    table.point("ualice", LOBBY_1)
    assert revision_of(table.version) == 1
    assert revision_of("not-a-scope-version") is None
