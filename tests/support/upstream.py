"""Tiny upstream pods: each answers any request with JSON naming its pod index."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


class Upstreams:
    """``count`` aiohttp servers on free loopback ports, in the running event loop."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ports: list[int] = []
        self._runners: list[web.AppRunner] = []

    async def start(self) -> Upstreams:
        for index in range(self.count):
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", _answer(index))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            self.ports.append(runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()


def _answer(index: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"pod": index, "path": request.path})

    return handle
