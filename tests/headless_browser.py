"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file descriptors 3
and 4, messages of JSON ended by a NUL byte), so the browser test needs no driver package."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path


class HeadlessBrowser:
    """One page of a headless Chromium; ``requests`` collects the URL of every request the page made."""

    def __init__(self, width: int = 1280, height: int = 1500) -> None:
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        command = (f"exec {executable} --headless --no-sandbox --use-angle=swiftshader --enable-unsafe-swiftshader --no-first-run --remote-debugging-pipe "
                   f"--window-size={width},{height} about:blank 3<&{to_browser} 4>&{from_browser}")
        self.process = subprocess.Popen(["bash", "-c", command], pass_fds=(to_browser, from_browser),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.requests = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "DOM"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    def _message(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"]["url"])
        return message

    def send(self, method: str, params: dict | None = None, session: bool = False, timeout_s: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout_s)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> None:
        """Until the page's ``expression`` is true (TimeoutError naming it)."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never had {expression}")
            time.sleep(0.5)

    def open(self, url: str, timeout_s: float = 60) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("document.readyState === 'complete'", timeout_s)

    def set_files(self, selector_index: int, path: Path) -> None:
        """Put ``path`` into the page's ``selector_index``-th file input (as a user choosing it)."""
        root = self.send("DOM.getDocument", {"depth": -1, "pierce": True}, session=True)["root"]["nodeId"]
        inputs = self.send("DOM.querySelectorAll", {"nodeId": root, "selector": "input[type=file]"}, session=True)["nodeIds"]
        self.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": inputs[selector_index]}, session=True)

    def click_button(self, text: str) -> None:
        """Press and release the mouse on the button showing ``text`` (a script's ``click()`` is not enough)."""
        find = f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === {json.dumps(text)})"
        self.wait_for(f"{find} !== undefined", 60)
        box = self.evaluate(f"{find}.getBoundingClientRect().toJSON()")
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                      session=True)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._commands)
        os.close(self._replies)
