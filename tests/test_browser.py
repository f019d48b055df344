"""End to end: notebooks/control_panel.ipynb in JupyterLab, in headless Chromium, used as a person uses it.

A temporary copy of the notebook is served (Lab autosaves), a tiny clip lies beside it, and the test types the
inputs and output folder, picks a preset, clicks Run and waits for the results table to show the finished
item and the report's previews under it (the contact sheet and the motion plot, drawn by the browser). The
screenshot is kept in test-artifacts/panel.png (CGPU_KIT_UPDATE_DOCS=1 also writes docs/panel.png, reduced to
a 256-colour palette to keep it small).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM_FLAGS, JupyterLab, chromium_path, missing_for_browser_test
from conftest import copy_as

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(missing_for_browser_test() is not None, reason=str(missing_for_browser_test()))


@pytest.mark.timeout(240)
def test_when_run_is_clicked_in_jupyterlab_then_the_results_table_and_the_previews_show_the_finished_item(tmp_path, shaky_clip):
    from playwright.sync_api import expect, sync_playwright

    lab_root = tmp_path / "lab"
    lab_root.mkdir()
    shutil.copy(ROOT / "notebooks" / "control_panel.ipynb", lab_root / "panel.ipynb")
    copy_as(shaky_clip(width=160, height=120, frames=30, jitter=8), lab_root / "clips" / "shaky clip (1).mp4")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "panel.png"
    shot.unlink(missing_ok=True)

    with JupyterLab(lab_root, tmp_path / "jupyter") as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.set_default_timeout(60_000)
            page.goto(lab.url("lab/tree/panel.ipynb"))
            lab.wait_kernel_idle("panel.ipynb")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            panel = page.locator(".cgpu-kit-panel")
            panel.wait_for()
            page.locator(".cgpu-kit-inputs input").fill("clips/*.mp4")
            expect(page.locator(".cgpu-kit-files")).to_contain_text("1 file")
            expect(page.locator(".cgpu-kit-files")).to_contain_text("shaky clip (1).mp4")
            page.locator(".cgpu-kit-out input").fill("out")
            page.locator(".cgpu-kit-param-preset select").select_option("ultrafast")
            panel.locator("button.widget-button", has_text="Run").click()

            expect(page.locator(".cgpu-kit-results td.cgpu-kit-status")).to_have_text("done", timeout=120_000)
            expect(page.locator(".cgpu-kit-message")).to_contain_text("completed: 1 done, 0 failed", timeout=60_000)
            expect(page.locator(".cgpu-kit-results a", has_text="shaky clip (1).mp4")).to_have_attribute(
                "href", "out/shaky%20clip%20%281%29.mp4")
            width = page.locator(".cgpu-kit-progress .progress-bar").evaluate("e => e.style.width")
            previews = page.locator(".cgpu-kit-report-previews .cgpu-kit-preview img")
            expect(previews).to_have_count(2)
            expect(page.locator(".cgpu-kit-report-previews .cgpu-kit-motion")).to_contain_text("px after")
            expect(page.locator(".cgpu-kit-report-previews svg polyline")).to_have_count(2)
            decoded = previews.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0 ? i.naturalHeight : 0)")
            page.locator(".cgpu-kit-report-previews").scroll_into_view_if_needed()
            panel.screenshot(path=str(shot))
        finally:
            browser.close()

    assert width == "100%"
    assert decoded == [90, 90]  # the input's frames and the output's, each strip 90 pixels tall
    assert (lab_root / "out" / "shaky clip (1).mp4").stat().st_size > 0
    assert shot.stat().st_size > 10_000
    if os.environ.get("CGPU_KIT_UPDATE_DOCS"):
        from PIL import Image

        Image.open(shot).convert("RGB").quantize(256).save(ROOT / "docs" / "panel.png", optimize=True)
