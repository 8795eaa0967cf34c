"""The admin API's answers as lines an operator reads: pure functions over its JSON.

Each takes what the API answered (plain dicts and lists) and, where it shows ages, ``now``,
so the tests need neither a server nor a clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

Json = Mapping[str, Any]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def ago(at: float | None, now: float) -> str:
    """``at`` as a short age: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``never``."""
    if at is None:
        return "never"
    seconds = max(0, round(now - at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def clock(at: float) -> str:
    """A moment as local date and time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def moves(to_pods: Mapping[str, int] | Mapping[int, int]) -> str:
    """Where moved users went: ``4 to pod 0, 3 to pod 2`` (JSON keys are strings)."""
    by_pod = sorted((int(pod), count) for pod, count in to_pods.items())
    return ", ".join(f"{count} to pod {pod}" for pod, count in by_pod)


def event_line(event: Json) -> str:
    """One failover event, as ``status`` and ``history`` print it."""
    line = f"{event['type']:<14} pod={event['pod']} users={event['affected_users']}"
    if event.get("to_pods"):
        line += f" ({moves(event['to_pods'])})"
    return f"{line} {event['reason']}".rstrip()


def place(pod: Json) -> str:
    """Where a pod is: its address, after its name if it was given one."""
    if not pod.get("name"):
        return str(pod["address"])
    return f"{pod['name']} {pod['address'] or '(unresolved)'}"


def status(service: str, pods: Iterable[Json], events: Iterable[Json]) -> list[str]:
    lines = [
        service,
        f"{'pod':>4} {'address':<22} {'state':<11} {'weight':>6} {'users':>7} {'load':>5}",
    ]
    lines += [
        f"{pod['pod_index']:>4} {place(pod):<22} {pod['state']:<11} {pod['weight']:>6} "
        f"{pod['bound_users']:>7} {pod['load_state']:>5}"
        for pod in pods
    ]
    lines += [f"  {event_line(event)}" for event in events]
    return lines


def lease(found: Json) -> str:
    """A pod's lease, as registered or renewed."""
    return (
        f"pod {found['pod_index']} ({place(found['pod'])}) is {found['pod']['state']}; "
        f"its lease lasts {found['ttl_s']:g} s unless renewed"
    )


def history(service: str, events: list[Json]) -> list[str]:
    if not events:
        return [f"{service}: no failover events (of those kept)"]
    return [f"{clock(event['at'])}  {event_line(event)}" for event in events]


def pod_change(action: str, change: Json, *, move_users_per_s: float | None = None) -> list[str]:
    """What drain, fail or recover did to a pod, and the users it moved."""
    pod, event = change["pod"], change.get("failover")
    name = f"pod {pod['pod_index']} ({place(pod)}) is {pod['state']}"
    count = pod["bound_users"]
    users, one = plural(count, "bound user"), count == 1
    if action == "drain":
        if move_users_per_s is not None:
            verb = "moves" if one else "move"
            head = (
                f"{name}: no new users; its {users} {verb} to other pods at {move_users_per_s:g}/s"
            )
        else:
            head = f"{name}: no new users; its {users} {'stays' if one else 'stay'} until idle"
    elif action == "fail":
        head = f"{name}: it takes no new users and keeps none"
        if event is None or not event["affected_users"]:
            head += " (it had no users to move)"
    else:
        head = f"{name}: it takes new users again; {users} on it"
    lines = [head]
    if event is not None:
        moved = plural(event["affected_users"], "user")
        where = f" ({moves(event['to_pods'])})" if event.get("to_pods") else ""
        lines.append(f"{event['type']}: {moved} moved{where}")
    return lines


def migration(uid: str, before: int | None, binding: Json) -> str:
    pod = binding["pod"]
    if before is None:
        return f"{uid} was not bound; now bound to pod {pod}"
    if before == pod:
        return f"{uid} stays on pod {pod} (it was there already)"
    return f"{uid} moved from pod {before} to pod {pod}"


def binding(service: str, found: Json, now: float) -> str:
    bound = f"bound {clock(found['bound_at'])} ({ago(found['bound_at'], now)})"
    seen = found.get("last_seen")
    last = "not seen since" if seen is None else f"last seen {ago(seen, now)}"
    return f"{found['uid']} is on pod {found['pod']} of {service}; {bound}, {last}"


def users(service: str, page: Json, *, more: str | None) -> list[str]:
    """A page of a pod's users, one uid a line, under a header; ``more``: the next page's
    command, when there is one."""
    shown = len(page["users"])
    head = f"pod {page['pod']} of {service}: {plural(page['bound_users'], 'bound user')}"
    if more is not None:
        head += f", {shown} shown"
    lines = [head, *page["users"]]
    if more is not None:
        lines.append(f"more: {more}")
    return lines


def envoys(found: list[Json], now: float) -> list[str]:
    """Each connected Envoy, then per resource type what it acknowledged and its last NACK."""
    if not found:
        return ["no Envoy is connected"]
    lines = []
    for envoy in found:
        version = f" envoy={envoy['envoy_version']}" if envoy.get("envoy_version") else ""
        lines.append(
            f"{envoy['node_id']}  group={envoy['node_group']} transport={envoy['transport']}"
            f"{version} connected {ago(envoy['connected_since'], now)}, "
            f"last seen {ago(envoy['last_seen'], now)}"
        )
        for type_url, state in sorted(envoy.get("types", {}).items()):
            kind = type_url.rsplit(".", 1)[-1]
            acked = state.get("acked_version")
            line = f"    {kind:<26} "
            line += (
                "nothing acked"
                if acked is None
                else (f"acked {acked} ({ago(state.get('acked_at'), now)})")
            )
            if state.get("nacked_version") is not None:
                message = " ".join(str(state.get("nack_message") or "").split())
                line += (
                    f"; NACKED {state['nacked_version']} ({ago(state.get('nacked_at'), now)}): "
                    f"{message}"
                )
            lines.append(line)
    return lines
