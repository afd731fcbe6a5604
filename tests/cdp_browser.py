"""Headless Chromium driven over the DevTools protocol (raw CDP through ``websocket-client``).

Only what the web tests need: navigate, evaluate JavaScript (awaiting promises), collect console
errors and uncaught exceptions, take screenshots. Debian's ``chromium`` package provides the
browser (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


class BrowserError(RuntimeError):
    """Chromium failed to start, a CDP call failed, or page JavaScript threw."""


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    for cand in (env, *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(
        self, binary: str, width: int = 1400, height: int = 900, timeout: float = 30.0
    ) -> None:
        self.binary = binary
        self.size = (width, height)
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: Any = None
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="ntlb-chromium-")
        self._log = Path(self._profile) / "chromium.log"

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Browser:
        import websocket  # websocket-client

        cmd = [
            self.binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(
                    f"chromium did not start:\n{self._log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
        )
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.size[0],
                "height": self.size[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        return self

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)  # own session: pgid == pid
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # protocol -------------------------------------------------------------------------------------

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one CDP command and return its ``result`` (events received meanwhile are kept)."""
        import websocket

        self._next_id += 1
        msg_id = self._next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method} within {timeout or self.timeout:.0f}s")
            self.ws.settimeout(left)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """Evaluate JavaScript in the page (promises awaited) and return its JSON value."""
        wait = timeout or self.timeout
        res = self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "timeout": int(1000 * wait),
            },
            wait + 5,
        )
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            text = det.get("exception", {}).get("description") or det.get("text")
            raise BrowserError(f"page JavaScript failed: {text}")
        return res.get("result", {}).get("value")

    def wait_for(
        self, expression: str, timeout: float = 30.0, interval: float = 0.2, what: str | None = None
    ) -> Any:
        """Poll ``expression`` until it is truthy; return its value (``what`` names it in errors)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"timed out after {timeout:.0f}s waiting for: {what or expression}"
                )
            time.sleep(interval)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def screenshot(self, path: Path, clip: dict[str, float] | None = None) -> Path:
        """Save a PNG of the viewport (or of ``clip`` = {x, y, width, height} in CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    # console --------------------------------------------------------------------------------------

    def console_errors(self) -> list[str]:
        """Error-level console messages, uncaught exceptions and failed loads seen so far."""
        with contextlib.suppress(BrowserError):
            self.call("Runtime.evaluate", {"expression": "0"})  # flush pending events
        out = []
        for ev in self.events:
            method, p = ev["method"], ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                det = p.get("exceptionDetails", {})
                out.append(
                    f"exception: {det.get('exception', {}).get('description') or det.get('text')} "
                    f"({det.get('url', '')})"
                )
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
                )
                frames = p.get("stackTrace", {}).get("callFrames", [])
                out.append(
                    f"console.error: {args} ({' < '.join(f.get('url', '') for f in frames[:3])})"
                )
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log: {e.get('text')} ({e.get('url', '')})")
        return out
