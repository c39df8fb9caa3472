"""Notebook 01 in JupyterLab, in a real (headless) Chromium driven by Playwright.

JupyterLab runs from the project's venv on 127.0.0.1 with a token and a temporary root holding a
copy of notebook 01; the test runs all cells and checks in the page that the frames render, that
the plotly cognitive map has one shape per object, and that the explorer's frame-count and question
controls change the map; the browser console must stay free of errors. Screenshots go to the
test's folder and to outputs/browser/. JupyterLab is stopped even when the test fails.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("V2LO_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(folder: Path) -> None:
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "autoStartDefaultKernel": True
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for rel, value in settings.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class Lab:
    """A JupyterLab server for the test; always stopped by ``stop``."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port, self.token = free_port(), "v2lo-test-token"
        write_settings(work / "settings")
        env = {
            **os.environ,
            "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [
            str(Path(sys.executable).with_name("jupyter")),
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.port_retries=0",
        ]
        self.log = open(work / "jupyterlab.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


NOTEBOOK_DONE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext || !w.sessionContext.session) return false;
  const kernel = w.sessionContext.session.kernel;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  return kernel && kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""

PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  title: (gd.layout && gd.layout.title && gd.layout.title.text) || '',
  shapes: gd.layout && gd.layout.shapes ? gd.layout.shapes.length : 0,
  dashes: gd.layout && gd.layout.shapes ? gd.layout.shapes.map(s => (s.line && s.line.dash) || '') : [],
  drawnShapes: gd.querySelectorAll('.shapelayer path').length,
  labels: ((gd.data || []).find(t => t.name === 'objects') || {x: []}).x.length,
  cameras: ((gd.data || []).find(t => t.name === 'cameras') || {x: []}).x.length,
  images: gd.querySelectorAll('image').length,
  arrows: ((gd.layout && gd.layout.annotations) || []).map(a => [a.x, a.y, a.ax, a.ay].join(',')).join(';'),
  inWidget: !!gd.closest('.jupyter-widgets, .widget-output'),
}))"""


def explorer_map(page) -> dict:
    maps = [p for p in page.evaluate(PLOTS) if p["inWidget"] and "ground-truth map" in p["title"]]
    assert len(maps) == 1, maps
    return maps[0]


def test_notebook_01_in_jupyterlab(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (or set V2LO_CHROMIUM)"
        )
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_data_inspection.ipynb", root)
    shots = ROOT / "outputs" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    lab = Lab(root, tmp_path)
    errors: list[str] = []
    try:
        lab.wait_ready()
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chrome"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROME_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = ctx.new_page()
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{lab.url}/lab/tree/01_data_inspection.ipynb?token={lab.token}")
                page.wait_for_function(
                    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                    " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
                    timeout=120_000,
                )
                page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")
                page.wait_for_function(NOTEBOOK_DONE, timeout=240_000, polling=1000)
                page.wait_for_timeout(2000)
                page.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
                plots = page.evaluate(PLOTS)
                # the frames: image traces drawn as <image> elements
                assert any(p["images"] > 0 for p in plots), plots
                # the cognitive map: one rectangle per object, every one drawn
                maps = [p for p in plots if "ground-truth map" in p["title"]]
                assert maps, plots
                for m in maps:
                    assert m["shapes"] == m["labels"] == m["drawnShapes"] > 0, m
                # the explorer: frame count and question change what the map shows
                before = explorer_map(page)
                buttons = page.locator(".widget-toggle-buttons button")
                labels = [b.strip() for b in buttons.all_inner_texts()]
                target = "1" if "1" in labels and before["cameras"] != 1 else labels[0]
                button = buttons.nth(labels.index(target))
                button.scroll_into_view_if_needed()
                button.click()
                page.wait_for_function(
                    "(t) => Array.from(document.querySelectorAll('.widget-output .js-plotly-plot'))"
                    ".some(gd => gd.layout && gd.layout.title && gd.layout.title.text.includes(t))",
                    arg=f", {target} frames",
                    timeout=60_000,
                )
                after = explorer_map(page)
                assert after["cameras"] == int(target) != before["cameras"], (before, after)
                explorer = page.locator(".jupyter-widgets.widget-vbox").first
                explorer.scroll_into_view_if_needed()
                explorer.screenshot(path=str(shots / "explorer.png"))
                question = page.locator(".widget-dropdown select").nth(2)
                options = question.locator("option").all_inner_texts()
                current = question.input_value()
                question.select_option(next(o for o in options if o != current))
                page.wait_for_timeout(3000)
                changed = explorer_map(page)
                assert changed["arrows"] != after["arrows"], (
                    after,
                    changed,
                )  # the question's vectors
                page.screenshot(path=str(tmp_path / "explorer-page.png"))
            finally:
                ctx.close()
    finally:
        lab.stop()
    assert lab.proc.poll() is not None  # JupyterLab is gone
    assert not errors, errors
