"""The commands that steer a running control plane through its admin API.

Each prints human lines (render.py), or with ``--json`` the API's JSON as it came, for
scripts. ``status`` and ``users --all`` make several calls; their JSON joins the answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from typing import Any

from controlplane.cli import render, sidecar
from controlplane.cli.admin_client import AdminApiError, AdminClient
from controlplane.domain import FailoverType

STATUS_EVENTS = 5


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin, args.token, ca_file=args.ca_file)


def _service(args: argparse.Namespace) -> str:
    return f"/api/v1/services/{_segment(args.namespace)}/{_segment(args.service)}"


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _out(args: argparse.Namespace, answer: Any, lines: list[str] | str) -> int:
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(lines if isinstance(lines, str) else "\n".join(lines))
    return 0


def _name(args: argparse.Namespace) -> str:
    return f"{args.namespace}/{args.service}"


def status(args: argparse.Namespace) -> int:
    client, base = _client(args), _service(args)
    pods = client.get(f"{base}/pods")
    events = client.get(f"{base}/failovers", limit=STATUS_EVENTS)
    answer = {"pods": pods, "failovers": events}
    return _out(args, answer, render.status(_name(args), pods, events))


def history(args: argparse.Namespace) -> int:
    query = {"limit": args.limit, "pod": args.pod, "type": args.type}
    events = _client(args).get(f"{_service(args)}/failovers", **query)
    return _out(args, events, render.history(_name(args), events))


def user(args: argparse.Namespace) -> int:
    found = _client(args).get(f"{_service(args)}/users/{_segment(args.uid)}")
    return _out(args, found, render.binding(_name(args), found, time.time()))


def users(args: argparse.Namespace) -> int:
    client, path = _client(args), f"{_service(args)}/pods/{args.pod}/users"
    page = client.get(path, cursor=args.cursor, limit=args.limit)
    if args.all:
        listed = list(page["users"])
        while page["next_cursor"] is not None:
            page = client.get(path, cursor=page["next_cursor"], limit=args.limit)
            listed += page["users"]
        page = {**page, "users": listed}
    more = None
    if page["next_cursor"] is not None:
        more = f"stateful-route users {args.pod} --cursor {page['next_cursor']} (or --all)"
    return _out(args, page, render.users(_name(args), page, more=more))


def envoys(args: argparse.Namespace) -> int:
    found = _client(args).get("/api/v1/envoys")
    return _out(args, found, render.envoys(found, time.time()))


def migrate(args: argparse.Namespace) -> int:
    client, path = _client(args), f"{_service(args)}/users/{_segment(args.uid)}"
    before = None if args.json else _pod_of(client, path)
    body = {"pod": args.pod} if args.reason is None else {"pod": args.pod, "reason": args.reason}
    moved = client.call("PUT", path, body)
    return _out(args, moved, render.migration(args.uid, before, moved))


def _pod_of(client: AdminClient, path: str) -> int | None:
    """The user's pod before the move (for the human answer); None when unbound."""
    try:
        pod: int = client.get(path)["pod"]
    except AdminApiError:  # unbound (404), or unreadable: the move itself will say more
        return None
    return pod


def pod_action(args: argparse.Namespace) -> int:
    body: dict[str, object] = {}
    if args.reason is not None:
        body["reason"] = args.reason
    rate = getattr(args, "move_users_per_s", None)
    if rate is not None:
        body["move_users_per_s"] = rate
    if getattr(args, "rebalance", False):
        body["rebalance"] = True
    path = f"{_service(args)}/pods/{args.pod}/{args.action}"
    change = _client(args).call("POST", path, body)
    return _out(args, change, render.pod_change(args.action, change, move_users_per_s=rate))


def register(args: argparse.Namespace) -> int:
    client, base, body = _client(args), _service(args), sidecar.lease_body(args)
    lease = client.call("POST", f"{base}/leases", body)
    _out(args, lease, render.lease(lease))
    if args.once:
        return 0
    sys.stdout.flush()
    return sidecar.renew_until_stopped(client, base, body, lease["pod_index"])


def add_commands(commands: Any) -> None:
    """The admin API's commands, on the parser's subcommands (``commands``)."""

    def command(name: str, help: str, run: Any, **defaults: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--admin",
            default=os.environ.get("STATEFUL_ROUTE_ADMIN", "http://127.0.0.1:9901"),
            help="the admin API's URL (STATEFUL_ROUTE_ADMIN; default http://127.0.0.1:9901)",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("STATEFUL_ROUTE_TOKEN"),
            help="the admin API's token, needed by changes (STATEFUL_ROUTE_TOKEN)",
        )
        sub.add_argument(
            "--ca-file",
            default=os.environ.get("STATEFUL_ROUTE_CA_FILE"),
            help="the CA of an https admin API's certificate (STATEFUL_ROUTE_CA_FILE; "
            "default: the system's CAs)",
        )
        sub.add_argument("--namespace", "-n", default="demo", help="default: demo")
        sub.add_argument("--service", "-s", default="echo", help="default: echo")
        sub.add_argument("--json", action="store_true", help="print the API's JSON answer")
        sub.set_defaults(run=run, **defaults)
        return sub

    command("status", "show the pods, their state and users, and recent failovers", status)

    sub = command("user", "show which pod a user is bound to, since when", user)
    sub.add_argument("uid")

    sub = command("users", "list the users bound to a pod, a page at a time", users)
    sub.add_argument("pod", type=int)
    sub.add_argument("--limit", type=positive_int, default=100, help="users a page (about; 100)")
    sub.add_argument("--cursor", type=int, default=0, help="the page to start at (0: the first)")
    sub.add_argument("--all", action="store_true", help="every page, not only one")

    sub = command("history", "show the failover history, newest first", history)
    sub.add_argument("--pod", type=int, help="only the events of this pod")
    sub.add_argument(
        "--type",
        type=str.upper,
        choices=[kind.value for kind in FailoverType],
        help="only the events of this type",
    )
    sub.add_argument("--limit", type=positive_int, help="at most this many events")

    command("envoys", "list the connected Envoys and what each acknowledged", envoys)

    sub = command("migrate", "move one user to a pod", migrate)
    sub.add_argument("uid")
    sub.add_argument("pod", type=int)
    sub.add_argument("--reason", help="kept in the history (default: operator)")

    sub = command("drain", "give a pod no new users; its users stay or move", pod_action)
    sub.set_defaults(action="drain")
    _pod_arguments(sub)
    sub.add_argument(
        "--move-users-per-s",
        type=float,
        metavar="RATE",
        help="move the pod's users to other pods at this rate (default: they stay until idle)",
    )
    sub = command("recover", "make a pod take new users again", pod_action, action="recover")
    _pod_arguments(sub)
    sub.add_argument(
        "--rebalance", action="store_true", help="also move it its fair share of users now"
    )
    sub = command("fail", "mark a pod down and move its users to healthy pods", pod_action)
    sub.set_defaults(action="fail")
    _pod_arguments(sub)

    sub = command("register", "a pod's sidecar: register it with a lease and renew it", register)
    sidecar.add_arguments(sub)


def _pod_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("pod", type=int)
    sub.add_argument("--reason", help="kept in the pod's health and the history")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value
