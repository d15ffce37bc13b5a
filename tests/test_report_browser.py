"""The report in a real browser: headless Chromium (Debian's package, installed here if missing),
started once, driven over the DevTools protocol on a pipe (no websocket library needed).

Built from a real BASE where every phase ran with tiny models (features, duplicates, tiny CLIP,
flags, tiny YOLO, OCR, tiny SAM and Depth Anything, the tiny VLM, the 2-D map when `exoray map`
exists), then checked: every sprite sheet loads (lazily: the map's data only once scrolled to),
no console errors or exceptions, galleries and the map render (non-blank screenshot areas),
hover shows a thumbnail and a path, every CSV link resolves to a file. About a minute and a half,
most of it the phases.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from exoray.report import build_report

pytestmark = pytest.mark.slow


def chromium() -> str:
    """Path of Debian's chromium, installed with apt-get when missing (the tests run as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    steps = [["apt-get", "install", "-y", "-qq", "chromium"]]
    for cmd in (steps[0], ["apt-get", "update", "-qq"], steps[0]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if cmd[1] == "install" and done.returncode == 0:
            break
    found = shutil.which("chromium")
    if not found:
        pytest.fail("the browser test needs Debian's chromium and `apt-get install -y chromium` "
                    f"failed: {done.stderr.strip()[-300:]}")
    return found


class DevTools:
    """Chrome DevTools protocol over --remote-debugging-pipe: JSON messages ended by NUL."""

    def __init__(self, binary: str, profile: str) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "about:blank"]
        # The pipe must be the browser's fds 3 (commands) and 4 (replies).
        shell = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.proc = subprocess.Popen(["bash", "-c", shell, "bash", *args],
                                     pass_fds=(to_browser_r, from_browser_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self.lock = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.session: str | None = None

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.lock:
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self.lock.notify_all()

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.next_id not in self.replies:
                if not self.lock.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no reply to {method} in {timeout}s")
            reply = self.replies.pop(self.next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for e in self.events:
                    if e["method"] == method:
                        return e
                if not self.lock.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no {method} event in {timeout}s")

    def js(self, expression: str, timeout: float = 30):
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page reported."""
        out = []
        with self.lock:
            for e in self.events:
                p = e.get("params", {})
                if e["method"] == "Runtime.exceptionThrown":
                    out.append(json.dumps(p.get("exceptionDetails", {}))[:300])
                elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                      "assert"):
                    out.append(" ".join(str(a.get("value", a.get("description")))
                                        for a in p.get("args", [])))
                elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                    out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        # The browser may already be gone; it is killed below either way.
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


@pytest.fixture(scope="module")
def full_report(ray_session, tmp_path_factory):
    """A BASE where every phase ran (tiny models), and its report."""
    import cv2
    from conftest import sign_image

    from exoray.dev.synth import make_image_set
    from exoray.engine.registry import phase_specs
    from exoray.engine.runner import run_phase
    from pipelines import dupes, manifest

    base = tmp_path_factory.mktemp("report-full")
    images = base / "data" / "images"
    make_image_set(images, n=48, seed=11, corrupt=True, max_megapixels=0.4)
    # A rendered sign (gray, so in the OCR subset below): real PP-OCR weights read its lines.
    cv2.imwrite(str(images / "sign.png"), sign_image())
    manifest.run(base, images=images)
    options = {
        "embed": {"models": ["clip:tiny"]},
        "detect": {"model": "yolo:tiny", "subset": "not dark"},
        # The slower models on a few images only (the synthetic set's gray pictures).
        "ocr": {"model": "rapidocr", "subset": "grayscale"},
        "depth": {"model": "depth:tiny", "subset": "grayscale"},
        "sam": {"model": "sam:tiny", "subset": "grayscale", "points_per_side": 4},
        "interpret": {"prompts": ["caption_short"], "model": "vlm:tiny", "subset": "grayscale"},
    }
    for spec in phase_specs():
        run_phase(spec, base, part_rows=100, show_progress=False,
                  **options.get(spec.name, {}))
        if spec.name == "features":
            dupes.run(base)
    try:
        from exoray.embedmap import build_map
    except ImportError:  # `exoray map` not there: the report says to run it
        build_map = None
    if build_map is not None:
        build_map(base, "clip")
    result = build_report(base, max_per_gallery=12)
    return base, result, build_map is not None


@pytest.fixture(scope="module")
def page(full_report, tmp_path_factory):
    base, result, _ = full_report
    browser = DevTools(chromium(), str(tmp_path_factory.mktemp("chromium-profile")))
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        browser.session = browser.call("Target.attachToTarget", targetId=target,
                                       flatten=True)["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            browser.call(domain)
        browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=900,
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", url=f"file://{result.index}")
        browser.wait_event("Page.loadEventFired")
        yield browser, result
    finally:
        browser.close()


def screenshot(browser: DevTools, selector: str) -> np.ndarray:
    """Pixels of the first element matching ``selector``, scrolled into view."""
    rect = browser.js(f"""(async () => {{
        const e = document.querySelector({json.dumps(selector)});
        e.scrollIntoView({{block: "center"}});
        const S = window.EXORAY_STATUS;
        for (let i = 0; i < 50; i++) {{  // its sprite sheets requested and loaded (lazy)
            await new Promise(r => setTimeout(r, 100));
            if (i > 2 && !Object.values(S.sheets).includes("loading")) break;
        }}
        const b = e.getBoundingClientRect();
        return [b.x + window.scrollX, b.y + window.scrollY, b.width, b.height];
    }})()""")  # a screenshot clip is in page coordinates
    shot = browser.call("Page.captureScreenshot", format="png",
                        clip={"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3],
                              "scale": 1})
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))


def test_the_report_renders_every_section_lazily_with_no_console_error(page, full_report):
    browser, result = page
    _, _, has_map = full_report
    assert browser.js("window.EXORAY_STATUS.rendered") is True
    sections = browser.js("[...document.querySelectorAll('main > section')].map(s => s.id)")
    assert sections == result.sections
    assert {"overview", "quality", "duplicates", "subsets", "embeddings", "semantics",
            "captions", "errors"} <= set(sections)
    if has_map:  # below the fold: its data is not loaded before the page is scrolled there
        assert browser.js("window.EXORAY_STATUS.map") == "none"
    # Scroll through the whole page as a reader would; every gallery's sheet loads on the way.
    status = browser.js("""(async () => {
        const step = window.innerHeight / 2;
        for (let y = 0; y <= document.body.scrollHeight; y += step) {
            window.scrollTo(0, y);
            await new Promise(r => setTimeout(r, 60));
        }
        const S = window.EXORAY_STATUS;
        for (let i = 0; i < 100 && S.loaded + S.failed < EXORAY_REPORT.sheets.length; i++)
            await new Promise(r => setTimeout(r, 100));
        await new Promise(r => setTimeout(r, 200));
        return {loaded: S.loaded, failed: S.failed, sheets: EXORAY_REPORT.sheets.length,
                tiles: S.tiles, pics: document.querySelectorAll('main .pic').length,
                map: S.map, points: S.mapPoints};
    })()""", timeout=60)
    assert status["sheets"] == result.sheets >= 1
    assert status["loaded"] == status["sheets"] and status["failed"] == 0
    assert status["tiles"] == status["pics"] > 0  # every tile got its sheet as background
    if has_map:
        assert status["map"] == "drawn" and status["points"] > 0
    assert browser.problems() == []


def test_galleries_overlays_and_the_map_are_drawn(page, full_report):
    browser, _ = page
    _, _, has_map = full_report
    gallery = screenshot(browser, "#quality .grid")
    assert gallery.std() > 20  # thumbnails, not an empty or flat area
    boxes = browser.js("document.querySelectorAll('#semantics .box').length")
    in_data = browser.js("EXORAY_REPORT.sections.find(s => s.id === 'semantics').blocks"
                         ".filter(b => b.items).flatMap(b => b.items)"
                         ".reduce((n, i) => n + (i.b || []).length, 0)")
    assert boxes == in_data > 0  # detections / OCR lines (the sign's) drawn over thumbnails
    if not has_map:
        text = browser.js("document.querySelector('#embeddings').textContent")
        assert "no map yet: run `exoray map" in text.replace("\n", " ") or \
            "no map yet: run exoray map" in text
        return
    pixels = screenshot(browser, "#embeddings canvas")
    drawn = (np.abs(pixels.astype(int) - 255).sum(axis=2) > 60).mean()
    assert 0.0005 < drawn < 0.5, drawn  # points on a white canvas
    # Hover: move over the canvas until the nearest point's tooltip shows a thumbnail and path.
    rect = browser.js("(() => { const b = document.querySelector('#embeddings canvas')"
                      ".getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; })()")
    shown = None
    for fy in np.linspace(0.05, 0.95, 12):
        for fx in np.linspace(0.05, 0.95, 16):
            browser.call("Input.dispatchMouseEvent", type="mouseMoved",
                         x=rect[0] + fx * rect[2], y=rect[1] + fy * rect[3])
            shown = browser.js("(() => { const t = document.getElementById('tip');"
                               "return t.hidden ? null : [t.textContent, "
                               "t.querySelectorAll('.pic').length]; })()")
            if shown and shown[1]:
                break
        if shown and shown[1]:
            break
    assert shown and shown[1] == 1 and "/" in shown[0] or "img_" in shown[0]


def test_every_csv_link_resolves_to_a_file_listing_images(page):
    browser, result = page
    links = browser.js("[...document.querySelectorAll('a.csv')].map(a => a.href)")
    assert len(links) >= 10
    for link in set(links):
        path = unquote(urlparse(link).path)
        assert os.path.isfile(path), link
        with open(path, encoding="utf-8") as f:
            assert f.readline().startswith("relpath"), link
    # Data travels as scripts (a file:// page cannot fetch JSON in Chromium), never as .json.
    out = os.path.dirname(result.index)
    assert not [n for n in os.listdir(out) if n.endswith(".json")]
