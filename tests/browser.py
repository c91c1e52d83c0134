"""A small headless-Chromium driver for the browser tests, over the DevTools protocol.

It keeps what a page does apart: script errors (uncaught exceptions, ``console.error``)
and failed network requests are collected separately, so a test can demand no script
error while allowing requests to the internet to fail (this machine has no internet).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.sync.client import connect

_spec = importlib.util.spec_from_file_location(
    "report_png", Path(__file__).resolve().parents[1] / "scripts/report_png.py"
)
_report_png = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_report_png)
FLAGS, chromium_path = _report_png.FLAGS, _report_png.chromium_path


@dataclass
class PageLog:
    script_errors: list[str] = field(default_factory=list)
    failed_requests: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)
    requested: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium with a fresh profile under ``workdir``."""

    def __init__(self, workdir: Path, width: int = 1300, height: int = 900) -> None:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("no Chromium on PATH")
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True)
        self.process = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._port(profile / "DevToolsActivePort")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        page = next(t for t in targets if t["type"] == "page")
        self._resources = contextlib.ExitStack()
        self.socket = self._resources.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        self._next_id = 0
        self._events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _port(self, port_file: Path) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.is_file() and port_file.read_text().strip():
                return int(port_file.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self.process.returncode}")
            time.sleep(0.1)
        raise TimeoutError("Chromium did not open its DevTools port in 30 s")

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 60) -> PageLog:
        """Load ``url`` and wait until the JavaScript expression ``ready`` is true; return
        what the page logged on the way."""
        self._events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {ready} still false after {timeout} s")
            time.sleep(0.25)
        time.sleep(0.5)  # let late errors arrive
        self.evaluate("0")  # drains pending events into the log
        return self._page_log()

    def _page_log(self) -> PageLog:
        log = PageLog()
        urls = {}
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
                log.requested.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                url = urls.get(params["requestId"], "?")
                log.failed_requests.append((url, params.get("errorText", "")))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                log.script_errors.append(f"uncaught: {text}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
                log.script_errors.append("console.error: " + " ".join(map(str, args)))
        return log

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1300, "height": min(height, 16000), "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self._resources.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def browser_required() -> bool:
    """CI sets REQUIRE_BROWSER=1 so that a missing Chromium fails instead of skipping."""
    return os.environ.get("REQUIRE_BROWSER") == "1"
