"""A real browser for the report's pages: Debian's headless Chromium, driven over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by NUL on file descriptors 3
and 4), so neither a websocket library nor a browser-automation package is needed.

`render(html, ...)` opens a page offline (every request that is not file: or data: is recorded and
blocked by a proxy that does not exist), waits until every plotly figure has drawn its SVG, and
returns the console errors, the uncaught exceptions, the figures found and drawn, and screenshots
(the whole page, or one element by id).

`.ci/run` installs Chromium with apt-get when it is missing (README command 2). A missing browser
is an error, not a skip: the page must be checked in CI.

Run as a script it writes screenshots of elements of a page (the PNGs under docs/):

    python tests/browser.py report.html --shot throughput=docs/report-throughput.png
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# Debian's launcher script (/usr/bin/chromium) runs the binary in /usr/lib/chromium; either works
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/lib/chromium/chromium")
START_TIMEOUT_S = 30
DRAW_TIMEOUT_S = 30
WIDTH = 1280


class BrowserMissing(RuntimeError):
    pass


def find_chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    raise BrowserMissing(f"no Chromium: none of {', '.join(CANDIDATES)} is on PATH; install it "
                         "(apt-get install chromium; the README's test command does it) to run the browser test")


# What every figure looks like once plotly has drawn it: its div (.js-plotly-plot) holds an SVG root
# (svg.main-svg) with at least one trace group, bar, point or line in it.
_FIGURES_JS = """(() => {
  const figs = [...document.querySelectorAll('.js-plotly-plot')];
  const drawn = figs.filter(f => f.querySelector('svg.main-svg') &&
      f.querySelectorAll('g.trace, g.barlayer path, g.points path, g.scatterlayer path').length > 0);
  return JSON.stringify({figures: figs.length, drawn: drawn.length,
                         svg_roots: document.querySelectorAll('svg.main-svg').length,
                         undrawn: figs.filter(f => !drawn.includes(f)).map(f => f.id),
                         height: document.documentElement.scrollHeight});
})()"""


@dataclass
class Rendered:
    figures: int                          # plotly figure divs on the page
    drawn: int                            # of them, with an SVG root holding traces
    svg_roots: int                        # svg.main-svg elements
    undrawn: list[str]
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)     # every URL the page asked for
    shots: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def external(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file:", "data:", "blob:", "about:"))]


class _Pipe:
    """The DevTools protocol over Chromium's pipe: commands with ids, events collected on the way."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.w, self.r = os.fdopen(write_fd, "wb", buffering=0), os.fdopen(read_fd, "rb", buffering=0)
        self.next_id, self.buffer, self.events = 0, b"", []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = self.r.read(1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (it crashed or exited)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: Optional[str] = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.w.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout_s} s")
            self.events.append(self._read())

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result["result"].get("value")


def _shot(pipe: _Pipe, session: str, element: Optional[str], path: Path, height: int) -> Path:
    if element is None:
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
    else:
        box = pipe.evaluate(session, f"""(() => {{ const e = document.getElementById({json.dumps(element)});
            if (!e) return null; const r = e.getBoundingClientRect();
            return {{x: r.left + window.scrollX, y: r.top + window.scrollY,
                     width: r.width, height: r.height}}; }})()""")
        if box is None:
            raise KeyError(f"no element with id {element!r} on the page")
        clip = {**box, "scale": 1}
    data = pipe.send("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data["data"]))
    return path


def render(page: Path, shots: Optional[dict[Optional[str], Path]] = None, *, height: int = 900) -> Rendered:
    """Open `page` in headless Chromium offline; `shots` maps an element id (None: the whole page)
    to the PNG to write."""
    binary = find_chromium()
    start = time.monotonic()
    profile = tempfile.mkdtemp(prefix="m2tune-chromium-")
    # fds 3 and 4 of the child: the browser reads commands from 3 and writes replies to 4. The pipe
    # ends are moved above 9 first (an end may itself be 3 or 4), and bash puts them in place (dash
    # takes single-digit fds only); no preexec_fn, which may deadlock a forked child of a process
    # with threads
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    child_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_w = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(cmd_r)
    os.close(out_w)
    flags = ["--headless=new", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={profile}", "--disable-gpu", "--disable-extensions", "--mute-audio",
             "--no-sandbox",                       # CI and the dev machine run as root
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",   # offline: nothing leaves
             f"--window-size={WIDTH},{height}", "about:blank"]
    shell = f'exec "$0" "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
    bash = shutil.which("bash") or "/bin/bash"
    proc = subprocess.Popen([bash, "-c", shell, binary, *flags], pass_fds=(child_r, child_w),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(child_r)
    os.close(child_w)
    pipe = _Pipe(cmd_w, out_r)
    try:
        targets = pipe.send("Target.getTargets")["targetInfos"]
        page_target = next(t["targetId"] for t in targets if t["type"] == "page")
        session = pipe.send("Target.attachToTarget", targetId=page_target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            pipe.send(f"{domain}.enable", session)
        pipe.send("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=height,
                  deviceScaleFactor=1, mobile=False)
        pipe.send("Page.navigate", session, url=Path(page).resolve().as_uri())
        pipe.wait_event("Page.loadEventFired", START_TIMEOUT_S)
        deadline = time.monotonic() + DRAW_TIMEOUT_S
        while True:
            state = json.loads(pipe.evaluate(session, _FIGURES_JS))
            if state["drawn"] == state["figures"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        out = Rendered(state["figures"], state["drawn"], state["svg_roots"], state["undrawn"])
        for element, path in (shots or {}).items():
            out.shots[element or "page"] = _shot(pipe, session, element, Path(path), state["height"])
        for e in pipe.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                entry = p["entry"]
                out.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif method == "Network.requestWillBeSent":
                out.requests.append(p["request"]["url"])
        out.seconds = time.monotonic() - start
        return out
    finally:
        try:
            pipe.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Screenshots of elements of an HTML page in headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("--shot", action="append", default=[], metavar="ID=PNG",
                        help="element id and the PNG to write (id 'page': the whole page)")
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    shots: dict[Optional[str], Path] = {}
    for item in args.shot:
        element, sep, png = item.rpartition("=")
        if not sep or not element:
            parser.error(f"--shot {item!r}: expected ID=PNG")
        shots[None if element == "page" else element] = Path(png)
    out = render(args.page, shots, height=args.height)
    print(f"{out.drawn} of {out.figures} figures drawn in {out.seconds:.1f} s; "
          f"console errors {out.console_errors or 'none'}; external requests {out.external or 'none'}")
    for name, path in out.shots.items():
        print(f"  {name}: {path}")
    return 0 if out.drawn == out.figures and not (out.console_errors or out.exceptions or out.external) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
