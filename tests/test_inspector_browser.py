"""The contour inspector driven in a real browser: JupyterLab on 127.0.0.1, Debian's chromium.

Skips, saying why, where chromium or playwright is missing (`.ci/run` installs chromium).
Screenshots go to the test's temporary folder. The full-view redraw latency (control change
to the new image decoded in the page) is printed, and written to $NUCSEG_BROWSER_REPORT
when that is set; it is a measurement, not a pass/fail bar.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("NUCSEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandboxed root user on a machine without network (no background connections).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
TOKEN = "nucseg-browser-test"

NOTEBOOK_CODE = """\
import numpy as np
from nucseg.data.demo import make_tile
from nucseg.infer import get_predictor
from nucseg.inspector import ContourInspector

tiles = {"big": make_tile(1, size=1000, organ="demo-a"),
         "small": make_tile(2, size=256, organ="demo-b")}
images = {k: image for k, (image, _) in tiles.items()}
truth = {k: gt for k, (_, gt) in tiles.items()}
classical = get_predictor("classical")
predictions = {"classical": {k: classical(image) for k, image in images.items()},
               "shifted GT": {k: np.roll(gt, 4, axis=1) for k, gt in truth.items()}}
inspector = ContourInspector(images, truth, predictions, {"big": "demo-a", "small": "demo-b"})
inspector.widget
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a notebook that shows the inspector."""
    pytest.importorskip("playwright", reason="the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: install Debian's chromium package")
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CODE)])
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = spec
    nbformat.write(nb, root / "inspector.ipynb")
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--allow-root",
               f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]  # fmt: skip
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield f"{url}/lab/tree/inspector.ipynb?token={TOKEN}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


class Page:
    """The inspector's controls in the page, and a way to time one redraw."""

    def __init__(self, page, shots: Path) -> None:
        self.page, self.shots, self.n = page, shots, 0

    def control(self, kind: str, label: str):
        # A widget whose own label reads exactly `label` (ipywidgets 8 DOM).
        exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
        box = self.page.locator(f".widget-{kind}").filter(
            has=self.page.locator(".widget-label, .widget-label-basic span", has_text=exact)
        )
        return box.first

    def view_src(self) -> str:
        return self.page.locator("img.nucseg-view").first.get_attribute("src")

    def info(self) -> str:
        return self.page.locator(".nucseg-info").first.inner_text()

    def timed(self, action, name: str) -> float:
        """Run `action`; return seconds until the view's new image is decoded; screenshot."""
        # Resolves once the latest image is decoded: one change may send two images (a slider
        # echoing its new range back), and a newer one cancels the decoding of the older.
        self.page.evaluate("""() => {
            const img = document.querySelector('img.nucseg-view');
            window.__redrawn = new Promise(resolve => {
                const obs = new MutationObserver(() => {
                    const src = img.src;
                    img.decode().then(() => {
                        if (img.src === src) { obs.disconnect(); resolve(performance.now()); }
                    }, () => {
                        if (img.src === src) { obs.disconnect(); resolve(-1); }
                    });
                });
                obs.observe(img, {attributes: true, attributeFilter: ['src']});
            });
        }""")
        start = self.page.evaluate("performance.now()")
        action()
        end = self.page.evaluate("window.__redrawn")
        assert end > 0, f"{name}: the new image could not be decoded"
        self.n += 1
        self.page.screenshot(path=self.shots / f"{self.n:02d}_{name}.png", full_page=True)
        return (end - start) / 1000


def test_every_control_redraws_the_inspector_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(lab)
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget",
                               timeout=60_000)  # fmt: skip
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.wait_for_function("""() => {
            const w = window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session
                && w.sessionContext.session.kernel
                && w.sessionContext.session.kernel.connectionStatus === 'connected';
        }""", timeout=60_000)  # fmt: skip
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector("img.nucseg-view", timeout=180_000)
        ui = Page(page, shots)
        page.wait_for_function("""() => {
            const img = document.querySelector('img.nucseg-view');
            return img && img.complete && img.naturalWidth > 0;
        }""")  # fmt: skip
        page.screenshot(path=shots / "00_opened.png", full_page=True)
        assert "big · classical: AJI" in ui.info()
        assert "GT contour" in page.locator(".nucseg-legend").inner_text()
        img = page.locator("img.nucseg-view").first
        box = img.bounding_box()
        # 1000 px at 1/2, drawn at that size, not stretched to the output's width
        assert (round(box["width"]), round(box["height"])) == (500, 500)

        # Full-view redraws, timed: the contour and colour toggles on the 1000 x 1000 image.
        latencies = []
        for name in ("predicted contours", "GT contours", "status colours"):
            checkbox = ui.control("checkbox", name).locator("input")
            for _ in range(2):
                before = ui.view_src()
                latencies.append(ui.timed(checkbox.click, name.replace(" ", "_")))
                assert ui.view_src() != before
        legend_without = page.locator(".nucseg-legend").inner_text()
        assert "GT contour" in legend_without

        def changes_info(action, name):
            before_src, before_info = ui.view_src(), ui.info()
            latencies_any.append(ui.timed(action, name))
            assert ui.view_src() != before_src, name
            assert ui.info() != before_info, name

        latencies_any = []
        method = ui.control("dropdown", "method").locator("select")
        changes_info(lambda: method.select_option(label="shifted GT"), "method")
        assert "big · shifted GT: AJI" in ui.info()
        latencies.append(latencies_any[-1])  # a method change redraws the full view too
        status_filter = ui.control("dropdown", "list").locator("select")
        status_filter.select_option("false")
        nucleus = ui.control("dropdown", "nucleus").locator("select")
        page.wait_for_function("""(sel) => sel.options.length > 1""",
                               arg=nucleus.element_handle())  # fmt: skip
        changes_info(lambda: nucleus.select_option(index=1), "nucleus")
        assert "predicted nucleus" in ui.info() and ": false" in ui.info()
        zoom = page.locator("button", has_text="zoom to nucleus")
        before_info = ui.info()
        ui.timed(zoom.click, "zoom")
        zoomed = img.bounding_box()
        assert zoomed["width"] > 100 and ui.info() == before_info  # enlarged, same nucleus
        rows = ui.control("slider", "rows").locator(".noUi-handle-lower")
        before = ui.view_src()
        ui.timed(lambda: (rows.focus(), rows.press("ArrowRight")), "rows")
        assert ui.view_src() != before
        cols = ui.control("slider", "cols").locator(".noUi-handle-upper")
        before = ui.view_src()
        ui.timed(lambda: (cols.focus(), cols.press("ArrowLeft")), "cols")
        assert ui.view_src() != before
        image = ui.control("dropdown", "image").locator("select")
        changes_info(lambda: image.select_option(index=1), "image")
        assert "small · shifted GT: AJI" in ui.info() and "nucleus" not in ui.info()
        browser.close()

    report = {"full_view_redraw_s": [round(x, 3) for x in latencies],
              "median_full_view_redraw_s": round(statistics.median(latencies), 3),
              "screenshots": str(shots)}  # fmt: skip
    print("inspector redraw latency:", json.dumps(report))
    if path := os.environ.get("NUCSEG_BROWSER_REPORT"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=1) + "\n")
