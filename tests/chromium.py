"""A real headless Chromium driven over the DevTools protocol on a pipe (no network port).

Opens a page, collects every console error, uncaught exception and failed load
the browser logs, evaluates an expression in the page, and takes a full-page
screenshot.

Example::

    with Chromium(tmp_path / "profile") as browser:
        page = browser.open(path, probe="document.title")
        page.errors, page.probe, page.screenshot_png
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The flags this environment's notes ask for, plus the DevTools pipe (fds 3 and 4).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1200,900")


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Page:
    errors: list[str] = field(default_factory=list)
    probe: Any = None
    screenshot_png: bytes = b""


class Chromium:
    def __init__(self, profile: Path, *, timeout: float = 60.0) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed (scripts/install-dev.sh installs it)")
        self.timeout = timeout
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4: move our pipe ends there.
        # Park them above any fd in use first (bash, not dash: fds over 9), then take 3 and 4.
        high_in, high_out = (max(to_browser_read, from_browser_write) + n for n in (10, 11))
        script = (f"exec {high_in}<&{to_browser_read} {high_out}>&{from_browser_write}; "
                  f"exec {to_browser_read}<&- {from_browser_write}>&-; "
                  f"exec 3<&{high_in} 4>&{high_out} {high_in}<&- {high_out}>&-; "
                  'exec "$0" "$@"')
        self._process = subprocess.Popen(
            ["bash", "-c", script, binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_browser_read, from_browser_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._send("Browser.close")
        except (OSError, TimeoutError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def open(self, path: Path, *, probe: str) -> Page:
        """Load ``path``, wait for its load event, evaluate ``probe``, screenshot the page."""
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget",
                             {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self._call(f"{domain}.enable", session=session)
        self._events.clear()
        self._call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self._wait_event("Page.loadEventFired", session)
        # Late console messages from the load itself arrive right after the event.
        self._call("Runtime.evaluate", {"expression": "1"}, session=session)
        probed = self._call("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                            session=session)["result"].get("value")
        size = self._call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = self._call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}}, session=session)
        return Page(errors=self._errors(session), probe=probed,
                    screenshot_png=base64.b64decode(shot["data"]))

    def _errors(self, session: str) -> list[str]:
        errors = []
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append("console: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return errors

    def _call(self, method: str, params: dict[str, Any] | None = None, *,
              session: str | None = None) -> dict[str, Any]:
        message_id = self._send(method, params, session=session)
        while True:
            message = self._receive()
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]
            self._events.append(message)

    def _wait_event(self, method: str, session: str) -> None:
        while True:
            message = self._receive()
            self._events.append(message)
            if message.get("method") == method and message.get("sessionId") == session:
                return

    def _send(self, method: str, params: dict[str, Any] | None = None, *,
              session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._from_browser, selectors.EVENT_READ)
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    raise TimeoutError("chromium did not answer in time")
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise OSError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]
