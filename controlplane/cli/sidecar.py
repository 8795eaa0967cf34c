"""``stateful-route register``: a pod's sidecar. It registers the pod with a lease, renews the
lease every third of its time to live, and ends it when stopped (SIGTERM or Ctrl-C), so the
pod is drained at once rather than when the lease would have lapsed. ``--once`` registers or
renews once and exits (for a script or a probe of one's own).

A renewal that fails is said once on stderr (and once again when renewals work again); the
sidecar keeps trying: the control plane may be restarting, and the lease outlives a few misses.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from types import FrameType
from typing import Any

from controlplane.cli.admin_client import AdminApiError, AdminClient


def lease_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body of POST .../leases from the command's options."""
    body: dict[str, Any] = {"port": args.port, "ttl_s": args.ttl, "weight": args.weight}
    body.update({"host": args.host} if args.host else {"name": args.name})
    if args.index is not None:
        body["index"] = args.index
    return body


def renew_until_stopped(
    client: AdminClient, service_path: str, body: dict[str, Any], index: int
) -> int:
    """Renew pod ``index``'s lease until SIGTERM or Ctrl-C, then end it."""
    body = {**body, "index": index}
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(KeyboardInterrupt):
        _renew_forever(client, f"{service_path}/leases", body, every_s=body["ttl_s"] / 3)
    client.call("DELETE", f"{service_path}/pods/{index}/lease")
    print(f"pod {index} left: its lease ended, it is drained", flush=True)
    return 0


def _renew_forever(client: AdminClient, path: str, body: dict[str, Any], every_s: float) -> None:
    failing = False
    while True:
        time.sleep(every_s)
        try:
            client.call("POST", path, body)
        except AdminApiError as exc:
            if not failing:
                print(f"renewal failed, still trying: {exc.message}", file=sys.stderr, flush=True)
            failing = True
            continue
        if failing:
            print("renewals work again", file=sys.stderr, flush=True)
        failing = False


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same way out as Ctrl-C: end the lease, then exit


def add_arguments(sub: argparse.ArgumentParser) -> None:
    where = sub.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="the pod's address")
    where.add_argument("--name", help="the pod's DNS name (the control plane resolves it)")
    sub.add_argument("--port", type=int, required=True, help="the pod's port")
    sub.add_argument(
        "--index", type=int, help="the pod's index (default: its name's ordinal, else assigned)"
    )
    sub.add_argument("--weight", type=int, default=1, help="default: 1")
    sub.add_argument(
        "--ttl", type=float, default=30.0, help="the lease's time to live in seconds (30)"
    )
    sub.add_argument("--once", action="store_true", help="register or renew once, then exit")
