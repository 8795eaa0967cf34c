"""``stateful-route serve`` and ``stateful-route demo``: the commands that start processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controlplane.errors import InvalidInput, StatefulRouteError

if TYPE_CHECKING:
    from controlplane.runtime.stack import LocalStack


def add_commands(commands: Any) -> None:
    """``serve`` and ``demo``, on the parser's subcommands (``commands``)."""
    serve = commands.add_parser("serve", help="run the control plane")
    serve.add_argument("--config", help="a YAML or TOML settings file")
    serve.add_argument("--redis-url")
    serve.add_argument("--admin-port", type=int)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo", help="run a whole local stack: redis, control plane, pods, envoy"
    )
    demo.add_argument("--pods", type=int, default=4, help="demo pods (default 4)")
    demo.add_argument("--proxy-port", type=int, default=10000, help="Envoy's listener (10000)")
    demo.add_argument("--admin-port", type=int, default=9901, help="the admin API (9901)")
    demo.add_argument("--xds", choices=["rest", "ads", "delta"], default="rest")
    demo.add_argument("--token", help="admin API token (default: a random one)")
    demo.add_argument(
        "--tls",
        action="store_true",
        help="xDS and the miss path over mutual TLS, the admin API over TLS, with a throwaway CA",
    )
    demo.set_defaults(run=_demo)


def _serve(args: argparse.Namespace) -> int:
    from controlplane.server import Server
    from controlplane.settings import Settings

    overrides: dict[str, Any] = {}
    if args.redis_url:
        overrides["redis"] = {"url": args.redis_url}
    if args.admin_port is not None:
        overrides["listen"] = {"admin_port": args.admin_port}
    try:
        settings = Settings.load(args.config, **overrides)
    except ValidationError as exc:
        raise InvalidInput(f"invalid settings: {_issues(exc)}") from None
    try:
        asyncio.run(Server(settings).run_until_signalled())
    except OSError as exc:  # a port taken, an address not on this machine
        raise StatefulRouteError(f"cannot start the control plane: {exc}") from None
    return 0


def _issues(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def _demo(args: argparse.Namespace) -> int:
    from controlplane.admin.config import MIN_TOKEN_LENGTH
    from controlplane.runtime.stack import LocalStack, StackConfig

    if not 1 <= args.pods <= 64:
        raise InvalidInput("--pods must be between 1 and 64")
    if args.token is not None and len(args.token) < MIN_TOKEN_LENGTH:
        raise InvalidInput(f"--token must be at least {MIN_TOKEN_LENGTH} characters")
    config = StackConfig(
        pods=args.pods,
        proxy_port=args.proxy_port,
        admin_port=args.admin_port,
        transport=args.xds,
        token=args.token,
        tls=args.tls,
    )
    return asyncio.run(_run_demo(LocalStack(config)))


async def _run_demo(stack: LocalStack) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _say("starting the stateful-route demo stack:")
    starting = asyncio.create_task(stack.start(progress=lambda step: _say(f"  - {step}")))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: start() stops what it started
        starting.cancel()
    stopping.cancel()
    try:
        await starting
    except asyncio.CancelledError:
        _say("stopped before the stack was ready")
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:  # a part did not start (see its log)
        raise StatefulRouteError(f"the demo stack did not start: {exc}") from None
    supervisor = asyncio.create_task(stack.keep_controlplane_up(_say))
    try:
        _say(_ready_banner(stack))
        await stop.wait()
        _say("stopping...")
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await stack.stop()
    return 0


def _ready_banner(stack: LocalStack) -> str:
    ca = f" --ca-file {stack.ca_file}" if stack.ca_file else ""
    tls = (
        f"\n  CA (throwaway):  {stack.ca_file} (xDS and the miss path: mutual TLS)"
        if stack.ca_file
        else ""
    )
    return f"""
ready.
  proxy (Envoy):   {stack.proxy_url}/
  admin API:       {stack.admin_url}/api/v1/services
  dashboard:       {stack.admin_url}/
  API docs:        {stack.admin_url}/docs
  token:           {stack.token}{tls}
  logs:            {stack.workdir}

try it:
  curl -H 'x-uid: alice' {stack.proxy_url}/
  stateful-route status --admin {stack.admin_url}{ca}
  stateful-route drain --admin {stack.admin_url}{ca} --token {stack.token} <pod>

A control plane that exits is started again (killing it is safe to try);
Ctrl-C stops every process this command started."""


def _say(text: str) -> None:
    """Print for the operator; a closed stdout (a pipe whose reader left) must not stop us
    from stopping what we started."""
    with contextlib.suppress(OSError):
        print(text, flush=True)
