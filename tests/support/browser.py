"""A headless Chromium driven over the DevTools protocol (CDP), with aiohttp's websocket client.

Just enough to test a page like a person would: open it, fill in fields, click, wait until
the page shows something, read text, take a screenshot. No Selenium, no Playwright: Chromium
itself (Debian: ``apt-get install -y chromium``) and one websocket.

    async with Chromium.launch() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for("document.querySelectorAll('tbody tr').length === 3")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

# Debian names the binary "chromium"; other systems ship the same program under other names.
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless=new",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",  # the pages under test are on loopback; a proxy from env must not apply
    "--mute-audio",
    "--window-size=1400,1000",
)
START_TIMEOUT_S = 20.0


class BrowserError(AssertionError):
    """The page threw, a CDP command failed, or what was waited for never happened."""


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$CHROMIUM`` first), or None."""
    for name in (os.environ.get("CHROMIUM", ""), *BINARIES):
        if name and (path := shutil.which(name)):
            return path
    return None


class Chromium:
    """One headless Chromium process and the CDP connection to it.

    Started in its own process group and stopped by that group's id (the browser's PID), so
    its renderer and helper processes go with it and nothing else is touched.
    """

    def __init__(self, process: asyncio.subprocess.Process, profile: Path) -> None:
        self._process = process
        self._profile = profile
        self._session: aiohttp.ClientSession | None = None
        self._cdp: Cdp | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, binary: str | None = None) -> AsyncIterator[Chromium]:
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium binary found")
        profile = Path(tempfile.mkdtemp(prefix="stateful-route-chromium-"))
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        browser = cls(process, profile)
        try:
            await browser._connect()
            yield browser
        finally:
            await browser._close()

    async def new_page(self) -> Page:
        """A new tab, with page and runtime events on and JS errors collected."""
        assert self._cdp is not None
        target = await self._cdp.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._cdp.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._cdp, attached["sessionId"])
        await page.start()
        return page

    async def _connect(self) -> None:
        url = await self._devtools_url()
        self._session = aiohttp.ClientSession()
        # CDP messages (screenshots) may be far larger than aiohttp's 4 MiB default.
        ws = await self._session.ws_connect(url, max_msg_size=0)
        self._cdp = Cdp(ws)

    async def _devtools_url(self) -> str:
        """Read the port and path Chromium wrote into the profile once it listens."""
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                raise BrowserError(f"chromium exited at start-up ({self._process.returncode})")
            lines = active.read_text().split() if active.exists() else []
            if len(lines) == 2:
                port, path = lines
                return f"ws://127.0.0.1:{port}{path}"
            await asyncio.sleep(0.05)
        raise BrowserError(f"chromium wrote no {active.name} within {START_TIMEOUT_S} s")

    async def _close(self) -> None:
        if self._cdp is not None:
            with contextlib.suppress(BrowserError, aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.wait_for(self._cdp.send("Browser.close"), 5)
            await self._cdp.close()
        if self._session is not None:
            await self._session.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            os.killpg(self._process.pid, signal.SIGKILL)  # our own group: the browser's pid
            await self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


class Cdp:
    """Commands and events over one DevTools websocket (flattened sessions, one per tab)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._reader = asyncio.create_task(self._read())

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = reply
        await self._ws.send_str(json.dumps(message))
        return await reply

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every event (a dict with method, params, sessionId)."""
        self._listeners.append(listener)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                message = json.loads(frame.data)
                if "id" not in message:
                    for listener in self._listeners:
                        listener(message)
                    continue
                reply = self._pending.pop(message["id"], None)
                if reply is None or reply.done():
                    continue
                if "error" in message:
                    reply.set_exception(BrowserError(f"CDP error: {message['error']}"))
                else:
                    reply.set_result(message.get("result", {}))
        finally:
            # The browser went away: nobody waits forever for an answer.
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(BrowserError("the browser closed the DevTools socket"))
            self._pending.clear()


class Page:
    """One tab. ``errors`` holds every uncaught exception of its scripts and every request or
    script its Content-Security-Policy blocked."""

    def __init__(self, cdp: Cdp, session: str) -> None:
        self._cdp = cdp
        self._session = session
        self._loaded = asyncio.Event()
        self.errors: list[str] = []
        cdp.listen(self._on_event)

    async def start(self) -> None:
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")  # Content-Security-Policy violations arrive here

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._cdp.send(method, params, self._session)

    async def goto(self, url: str, within_s: float = 10.0) -> None:
        self._loaded.clear()
        navigated = await self.send("Page.navigate", {"url": url})
        if "errorText" in navigated:
            raise BrowserError(f"cannot open {url}: {navigated['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), within_s)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if a promise); page exceptions raise."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {text}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, within_s: float = 5.0) -> Any:
        """Poll ``expression`` until it is truthy; its value. Raises BrowserError on timeout."""
        deadline = time.monotonic() + within_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still falsy after {within_s} s: {expression}")
            await asyncio.sleep(0.05)

    async def wait_for_text(self, selector: str, text: str, within_s: float = 5.0) -> None:
        """Wait until the first element matching ``selector`` shows exactly ``text``."""
        await self.wait_for(
            f"document.querySelector({json.dumps(selector)})?.innerText === {json.dumps(text)}",
            within_s,
        )

    async def text(self, selector: str) -> str:
        """The visible text of the first element matching ``selector``."""
        return str(await self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    async def fill(self, selector: str, value: str) -> None:
        """Set a field's value as typing would (an ``input`` event follows)."""
        await self.evaluate(
            f"(() => {{ const field = document.querySelector({json.dumps(selector)});"
            f" field.focus(); field.value = {json.dumps(value)};"
            " field.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def screenshot(self, path: Path) -> None:
        """The whole page (beyond the window too) as PNG."""
        shot = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("sessionId") != self._session:
            return
        if event["method"] == "Page.loadEventFired":
            self._loaded.set()
        elif event["method"] == "Runtime.exceptionThrown":
            details = event["params"]["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif event["method"] == "Log.entryAdded" and event["params"]["entry"]["source"] in (
            "javascript",
            "security",
        ):
            self.errors.append(event["params"]["entry"]["text"])
