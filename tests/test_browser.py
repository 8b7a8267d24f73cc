"""The explorers in a real browser: JupyterLab (headless, on 127.0.0.1, with a token) runs a copy of each
notebook with the smoke profile, and Debian's Chromium, driven by Playwright, moves each explorer's slider
with the keyboard. The readout and the displayed image must change, and no cell may fail.

Needs /usr/bin/chromium (`apt-get install -y --no-install-recommends chromium`; `./run_all.sh test`
installs it when missing) and the pinned `playwright` package; `playwright install` is never used. Under
CI (CI=true) a missing browser is a failure; elsewhere the test is skipped with the reason.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import config

pytestmark = pytest.mark.slow  # a JupyterLab server and Chromium running every notebook (minutes)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_S = 600  # a whole notebook with the smoke profile, its runs cached; under a minute here


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -r requirements.txt)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run under CI: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, smoke_pipelines, browser):
    """A JupyterLab server with fresh settings and workspaces (so no dialog asks for a kernel), whose
    kernels import this checkout's helpers and write runs, plots and builds under a temporary folder.
    Its runs cache starts as a copy of the smoke pipelines' (conftest.py): the notebooks load their
    models instead of training them again, which the pipeline tests already cover."""
    base = tmp_path_factory.mktemp("lab")
    shutil.copytree(smoke_pipelines[0] / "runs", base / "runs")
    root = base / "root"
    root.mkdir()
    token, port = secrets.token_hex(16), _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(config.ROOT), os.environ.get("PYTHONPATH", "")]),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        DIFFUSION_RUNS_DIR=str(base / "runs"),
        DIFFUSION_PLOTS_DIR=str(base / "Plots"),
        DIFFUSION_BUILD_DIR=str(base / "build"),
        DIFFUSION_RESULTS_DIR=str(base / "results"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    log = open(base / "server.log", "w")  # noqa: SIM115 (closed when the server stops)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{(base / 'server.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        yield root, url, token, base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _smoke_copy(name: str, root: Path, **params) -> Path:
    """A copy of notebooks/<name> whose parameters cell sets the smoke profile (and `params`)."""
    nb = json.loads((config.NOTEBOOKS_DIR / name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    values = {"profile": "smoke", **params}
    lines = [line for line in "".join(cell["source"]).splitlines() if line.split("=")[0].strip() not in values]
    cell["source"] = "\n".join(lines + [f"{k} = {v!r}" for k, v in values.items()])
    path = root / name
    path.write_text(json.dumps(nb, indent=1))
    return path


def _image_digest(page, img) -> str:
    """SHA-256 of the bytes behind the <img> the Image widget shows (its src is a blob: URL)."""
    data = page.evaluate(
        """async (img) => {
        const buf = await (await fetch(img.src)).arrayBuffer();
        return Array.from(new Uint8Array(buf));
    }""",
        img.element_handle(),
    )
    return hashlib.sha256(bytes(data)).hexdigest()


def _state(page, box) -> tuple[str, str]:
    return box.locator(".widget-label").last.inner_text(), _image_digest(page, box.locator("img").last)


KERNEL_STATUS = ".jp-StatusBar-TextItem[title^='Change kernel']"  # "Python 3 (ipykernel) | Idle"
PROMPTS = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"


def _prompts(page) -> list[str]:
    return page.evaluate(f"() => {PROMPTS}")


def _run_all(page, url, token, name, timeout_s=RUN_TIMEOUT_S):
    """Opens the notebook, waits for its kernel, runs every cell and waits until nothing is queued.

    The notebook's execution indicator reads idle before the kernel has connected, and "Run All Cells"
    clicked then is dropped without a word; so this waits for the status bar's kernel status to read
    Idle, and clicks again if no cell has started within a minute. It returns when no cell is queued or
    running and the kernel is idle: every cell ran, or one failed and the rest were not run (the caller
    checks which)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # A workspace of its own, reset: only this notebook is open (no earlier tab, no dialog).
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    page.wait_for_function(
        f"""() => {{
        const s = document.querySelector("{KERNEL_STATUS}");
        return s !== null && /\\| Idle$/.test(s.textContent.trim());
    }}""",
        timeout=120_000,
    )
    started = f"() => {PROMPTS}.some(t => /\\[(\\*|\\d+)\\]/.test(t))"
    for attempt in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(started, timeout=60_000)
            break
        except PlaywrightTimeout:  # the click was dropped
            if attempt == 2:
                raise AssertionError(f"no cell started after three 'Run All Cells': {_prompts(page)}") from None
    page.wait_for_function(
        f"""() => {{
        const s = document.querySelector("{KERNEL_STATUS}");
        return !{PROMPTS}.some(t => t.includes("[*]")) && s !== null && /\\| Idle$/.test(s.textContent.trim());
    }}""",
        timeout=timeout_s * 1000,
    )


def _errors(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [
        f"{o['ename']}: {o['evalue']}"
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]


def _move_slider(page, box, keys: list[str]) -> None:
    handle = box.locator(".noUi-handle").last
    handle.focus()
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_timeout(500)


@pytest.mark.parametrize(
    "name, params, explorer",
    [
        ("01_ddpm.ipynb", {}, "forward z_t of test digits | reverse z_t of a sample"),
        # The appendix variants train five more models; the explorer needs only the main one.
        ("03_cold_diffusion.ipynb", {"cold_variants": []}, "D(x, t) | direct R(D(x, t), t) | Algorithm 2 from t"),
    ],
)
def test_explorer_follows_the_keyboard_in_jupyterlab(lab, browser, name, params, explorer):
    root, url, token, base = lab
    path = _smoke_copy(name, root, **params)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _run_all(page, url, token, name)
        page.keyboard.press("Control+s")  # the saved copy holds every output, errors included
        page.wait_for_timeout(1500)
        assert _errors(path) == []
        prompts = _prompts(page)
        assert all(re.fullmatch(r"\[\d+\]:?", p) for p in prompts), f"cells not run: {prompts}"
        box = page.locator(".widget-vbox", has=page.locator(".noUi-handle")).last
        box.scroll_into_view_if_needed()
        label, image = _state(page, box)
        assert explorer in label, label  # the trained model's rows are shown
        page.screenshot(path=str(base / f"{Path(name).stem}-before.png"))
        t_before = int(label.split()[2])
        _move_slider(page, box, ["ArrowLeft", "ArrowLeft", "ArrowLeft"])
        # the kernel renders each step in turn: wait for the third one (a fixed sleep raced it under load)
        box.locator(".widget-label").last.filter(has_text=f"t = {t_before - 3} of").wait_for(timeout=60_000)
        page.wait_for_timeout(500)  # and for its image
        moved_label, moved_image = _state(page, box)
        page.screenshot(path=str(base / f"{Path(name).stem}-after.png"))
        assert moved_label != label and moved_image != image
        t_before, t_after = (int(s.split()[2]) for s in (label, moved_label))
        assert t_after == t_before - 3, (label, moved_label)
        print(f"{name}: {label!r} -> {moved_label!r}; screenshots in {base}")
    finally:
        page.close()


def test_a_failing_cell_stops_the_run_and_is_reported(lab, browser):
    """The harness itself: a cell that raises ends the wait at once (the cells after it are not run),
    and the error is read back from the saved notebook."""
    root, url, token, base = lab
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in ("x = 1", "raise ValueError('stopped here')", "y = 2")
    ]
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = root / "failing.ipynb"
    path.write_text(json.dumps(nb))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _run_all(page, url, token, path.name, timeout_s=120)
        page.keyboard.press("Control+s")
        page.wait_for_timeout(1500)
        assert _errors(path) == ["ValueError: stopped here"]
        prompts = _prompts(page)
        assert re.fullmatch(r"\[\d+\]:?", prompts[0]) and prompts[2] in ("[ ]:", "[ ]"), prompts
    finally:
        page.close()
