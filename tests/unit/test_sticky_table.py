"""Which users Envoy routes by itself, and for how long."""

from __future__ import annotations

from controlplane.domain import ServiceKey
from controlplane.domain.sticky import StickyTable

LOBBY = ServiceKey("games", "lobby")
CHAT = ServiceKey("games", "chat")


def test_a_new_user_or_a_new_pod_changes_the_routes_but_a_refresh_does_not() -> None:
    table = StickyTable(window_s=60)
    assert table.put(LOBBY, "alice", 2, seen=0)
    assert not table.put(LOBBY, "alice", 2, seen=10)
    assert table.put(LOBBY, "alice", 3, seen=20)
    assert table.routes(LOBBY) == {"alice": 3}
    assert table.routes(CHAT) == {}


def test_users_leave_the_table_a_window_after_they_were_last_seen() -> None:
    table = StickyTable(window_s=60)
    table.put(LOBBY, "alice", 0, seen=0)
    table.put(LOBBY, "bob", 1, seen=0)
    table.put(CHAT, "carol", 0, seen=30)
    table.put(LOBBY, "alice", 0, seen=50)  # seen again: her clock restarts
    assert table.expire(now=61) == {LOBBY}
    assert table.routes(LOBBY) == {"alice": 0}
    assert table.expire(now=91) == {CHAT}
    assert table.expire(now=111) == {LOBBY}
    assert len(table) == 0


def test_moving_users_touches_only_those_in_the_table() -> None:
    table = StickyTable(window_s=60)
    table.put(LOBBY, "alice", 0, seen=0)
    table.put(LOBBY, "bob", 1, seen=0)
    assert table.move(LOBBY, ["alice", "bob", "ghost"], 1)
    assert table.routes(LOBBY) == {"alice": 1, "bob": 1}
    assert not table.move(LOBBY, ["alice"], 1)
    assert not table.move(CHAT, ["alice"], 1)


def test_removed_users_and_services_are_gone_and_expiry_ignores_them() -> None:
    table = StickyTable(window_s=60)
    table.put(LOBBY, "alice", 0, seen=0)
    table.put(CHAT, "bob", 0, seen=0)
    assert table.remove(LOBBY, "alice")
    assert not table.remove(LOBBY, "alice")
    assert table.drop_service(CHAT)
    assert table.expire(now=1000) == set()
    assert len(table) == 0


def test_refreshing_a_user_many_times_keeps_one_expiry_entry() -> None:
    table = StickyTable(window_s=60)
    for second in range(1000):
        table.put(LOBBY, "alice", 0, seen=second)
    assert len(table._expiry) == 1
    assert table.expire(now=1000) == set()
    assert table.expire(now=1060) == {LOBBY}


def test_a_user_removed_then_added_again_expires_once() -> None:
    table = StickyTable(window_s=60)
    table.put(LOBBY, "alice", 0, seen=0)
    table.remove(LOBBY, "alice")
    table.put(LOBBY, "alice", 1, seen=100)
    assert table.expire(now=61) == set()
    assert table.routes(LOBBY) == {"alice": 1}
