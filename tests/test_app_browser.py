"""The app through a real browser: Debian's ``chromium`` driven by ``playwright`` (no browser
download: ``executable_path``). Skipped, with the reason, when either is missing.

Shares the app server of ``test_app.py`` (``fake_stack.shared_app_server``: the fake stack, or
the shipped checkpoints with VIMORAG_APP_REAL=1). ``VIMORAG_SCREENSHOT=1`` saves the compare
view to ``docs/app.png``.
"""
from __future__ import annotations

import os
import re
import shutil

import pytest
from fake_stack import REPO, real_stack_missing, real_stack_requested, shared_app_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (`apt-get install -y chromium`)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

STATUS = "#status [data-testid=markdown]"     # the status text (not the progress overlay)
ST_JS = f"document.querySelector({STATUS!r}).innerText"
WAIT_MS = 900_000 if real_stack_requested() else 120_000


@pytest.fixture(scope="module")
def app_server():
    if real_stack_requested() and real_stack_missing():
        pytest.fail("VIMORAG_APP_REAL=1 but the shipped checkpoints are incomplete: "
                    + ", ".join(real_stack_missing()))
    return shared_app_server()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--enable-unsafe-swiftshader", "--mute-audio"])
        yield b
        b.close()


def open_page(browser, server, external: list | None = None):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.console_log = []
    page.on("console", lambda m: page.console_log.append(f"{m.type}: {m.text[:300]}"))
    page.on("pageerror", lambda e: page.console_log.append(f"pageerror: {str(e)[:300]}"))
    if external is not None:               # the app must work offline: no CDN, fonts, analytics
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith((server.url.rstrip("/"), "data:", "blob:")) else None)
    page.goto(server.url)
    page.wait_for_selector("#model-status:has-text('Ready')", timeout=WAIT_MS)
    return ctx, page


def generate(page, prompt: str, expect: str = "Done", timeout: int = WAIT_MS) -> str:
    """Type, click Generate, wait until the status line shows ``expect``; returns it."""
    before = page.inner_text(STATUS)
    page.fill("#prompt textarea", prompt)
    page.click("#generate")
    page.wait_for_function(
        f"([before, expect]) => {{ const t = {ST_JS}; "
        "return t !== before && t.includes(expect) && !t.startsWith('Working'); }",
        arg=[before, expect], timeout=timeout)
    return page.inner_text(STATUS)


def canvas_variance(page, selector: str, wait_ms: int = 20_000) -> float:
    """Pixel variance of an element's screenshot: a blank (one-colour) canvas gives ~0; a body
    on a checkered floor far more. Polls until the scene has drawn (or the time is up)."""
    import io

    from PIL import Image
    import numpy as np

    best, waited = 0.0, 0
    while waited <= wait_ms:
        png = page.locator(selector).first.screenshot()
        best = max(best, float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32).var()))
        if best > 20.0:
            break
        page.wait_for_timeout(1000)
        waited += 1000
    return best


def video_src(page, elem: str) -> str:
    return page.get_attribute(f"{elem} video", "src") or ""


def test_prompt_generate_router_compare_screenshot(browser, app_server):
    external: list[str] = []
    ctx, page = open_page(browser, app_server, external)
    try:
        status = generate(page, "a person does a cartwheel")
        assert status.startswith("Done"), status
        page.wait_for_selector("#result-a video[src]", timeout=WAIT_MS)
        page.wait_for_selector("#retrieved video[src]", timeout=WAIT_MS)
        assert video_src(page, "#result-a").endswith(".mp4")
        router = page.inner_text("#router")
        assert "Router weights" in router and "action" in router and "object" in router
        assert page.locator("#router .vr-fill").count() == 2
        assert page.locator("#top5 img").count() == 5
        assert "bvh" in page.inner_text("#downloads") and "glb" in page.inner_text("#downloads")
        try:                                   # the animated GLB viewer (Babylon.js on WebGL)
            page.wait_for_selector("#model3d canvas", timeout=60_000)
        except sync_api.TimeoutError:
            raise AssertionError("the 3D view made no canvas; browser console:\n"
                                 + "\n".join(page.console_log[-30:])) from None
        assert canvas_variance(page, "#model3d canvas") > 20.0, "the 3D view is blank"

        # choose the 2nd retrieved video: regenerates with it as the reference
        page.locator("#top5 img").nth(1).click()
        page.wait_for_function(f"() => {ST_JS}.includes('rank-2') && {ST_JS}.startsWith('Done')",
                               timeout=WAIT_MS)
        assert page.input_value("#video-id input, #video-id textarea")

        # compare mode: retrieval switches to random; both models side by side with distances
        page.get_by_text("Compare McDPO vs SFT").click()
        page.wait_for_function(
            "() => document.querySelector('#retrieval input[value=random]').checked", timeout=30_000)
        page.wait_for_selector("#result-b", state="visible", timeout=30_000)
        status = generate(page, "someone does a backflip")
        assert "McDPO vs SFT" in status, status
        page.wait_for_selector("#result-b video[src]", timeout=WAIT_MS)
        assert video_src(page, "#result-a") != video_src(page, "#result-b")
        dist = page.inner_text("#distances")
        assert "McDPO" in dist and "SFT" in dist
        # the panels say the videos are random, not retrieved
        assert "RANDOM" in page.inner_text("#retrieved") and "not a retrieval ranking" in page.inner_text("#top5")
        assert "a random video" in status and re.search(r" s in all( \(motion shown after [0-9.]+ s\))?: ", status), status
        if os.environ.get("VIMORAG_SCREENSHOT") == "1":
            page.wait_for_timeout(4000)        # let the videos and the 3D view show a frame
            page.screenshot(path=str(REPO / "docs" / "app.png"), full_page=True)
        assert external == [], f"the page fetched from outside the app: {external[:5]}"
    finally:
        ctx.close()


def test_bad_input_through_the_page(browser, app_server):
    ctx, page = open_page(browser, app_server)
    try:
        status = generate(page, "", expect="empty", timeout=60_000)
        assert "describe a motion" in status
        status = generate(page, "a person walks in a circle " * 200, expect="cut to 500")
        assert status.startswith("Done"), status
        toasts = page.locator("[data-testid=toast-text]", has_text="cut to 500")
        page.wait_for_timeout(1500)
        texts = toasts.all_inner_texts()
        assert len(texts) == 1, f"one toast per note, got {texts}"
        assert "**" not in texts[0] and "`" not in texts[0], texts[0]
        status = generate(page, "🤸‍♀️ 💃🕺", expect="Done")
        body = page.inner_text("body")
        assert "Traceback" not in body and "Error" not in page.inner_text(STATUS)
    finally:
        ctx.close()


def test_two_browser_contexts_get_their_own_results(browser, app_server):
    prompts = ["a person jumps up twice", "a man kicks with his right leg"]
    pages = [open_page(browser, app_server) for _ in prompts]
    try:
        for (_, page), prompt in zip(pages, prompts):        # both queued at once
            page.fill("#prompt textarea", prompt)
            page.click("#generate")
        for (_, page), prompt in zip(pages, prompts):
            page.wait_for_function(
                f"(p) => {{ const t = {ST_JS}; return t.startsWith('Done') && t.includes(p); }}",
                arg=prompt, timeout=WAIT_MS)
            stem = prompt.replace(" ", "_")
            assert stem in page.inner_text("#downloads")
            assert stem in video_src(page, "#result-a")
        other = [p.inner_text("#downloads") for _, p in pages]
        assert prompts[1].replace(" ", "_") not in other[0]
        assert prompts[0].replace(" ", "_") not in other[1]
    finally:
        for ctx, _ in pages:
            ctx.close()
