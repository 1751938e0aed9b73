"""End to end, as a user sees it: the quick demo sweep, then the MLflow UI in a real browser.

The test runs `lightning-scaling sweep --config examples/tiny_gpt/sweep_quick.yaml` (what `make demo-quick` runs)
into a temporary MLflow sqlite store, starts
`mlflow server` on it, and opens the summary run `scaling-law` in headless Chromium. It checks that the run's
description (the note the closing hook writes) renders as markdown with the recommendation sentence visible, and
that the artifacts view shows `scaling_law/frontier.png` as an image, that the experiment's page shows its
description (the state of the practice), and that the summary run's metrics page charts each refit's alpha.
Screenshots go to the test's temporary directory and, when LIGHTNING_SCALING_SCREENSHOT_DIR is set, there too.
LIGHTNING_SCALING_E2E_DEMO=full runs the full demo sweep (about 4 minutes) instead of the quick one; the README's
pictures in docs/ come from

    LIGHTNING_SCALING_E2E_DEMO=full LIGHTNING_SCALING_SCREENSHOT_DIR=docs pytest -m slow tests/test_e2e_ui.py

Needs Debian's Chromium at /usr/bin/chromium (`make test` installs it through `tools/ensure_debian_package.sh`) and
the `playwright` Python package (the dev extra). Playwright only drives the system Chromium; `playwright install`
is never needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import REPO, env, free_port, get, start_mlflow_server, stop_server, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
DEMOS = {"quick": ("tiny-gpt-demo-quick", ["--config", str(REPO / "examples/tiny_gpt/sweep_quick.yaml")]),
         "full": ("tiny-gpt-demo", ["--config", str(REPO / "examples/tiny_gpt/sweep.yaml")])}
FIGURE = "scaling_law/frontier.png"
EXPERIMENT_TITLE = "Scaling law: where this experiment stands"
REFIT_METRIC = "scaling_law/alpha"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
# The MLflow 3 UI has two modes, GenAI (its default) and "Model training" (the classic view of runs, metrics and
# artifacts). The switch is kept in the URL's query, so the run page is opened in the classic view directly.
CLASSIC = "workflowType=machine_learning"
DEMO_TIMEOUT_S = 1800  # about 140 s on a quiet 2-core machine; generous for a busy one
PAGE_TIMEOUT_MS = 120_000  # the UI's JavaScript bundle is large and the machine may be busy


def _require_browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test installs it through "
                    "tools/ensure_debian_package.sh)")
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[dev]')")
    return sync_playwright, PlaywrightTimeout


def _png_width(data: bytes) -> int:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">I", data[16:20])[0]


def _recommendation_sentence(note: str) -> str:
    """The sentence the UI must show: the bold 'Train next a model of ...' (or, for a degenerate fit, the bold
    'No run size is recommended ...'), else the 'Not enough runs' line."""
    bold = re.search(r"\*\*((?:Train next a model of|No run size is recommended).+?)\*\*", note, re.S)
    if bold:
        return " ".join(bold.group(1).split())
    for line in note.splitlines():
        if "Not enough runs" in line:
            return " ".join(line.strip("*# ").split())
    raise AssertionError(f"the summary note has no recommendation sentence:\n{note}")


def _save(page, tmp: Path, name: str) -> None:
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path))
    out = os.environ.get("LIGHTNING_SCALING_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(out) / f"mlflow-ui-{name}.png")


@pytest.mark.slow
def test_demo_recommendation_in_mlflow_ui(tmp_path, record_property):
    sync_playwright, PlaywrightTimeout = _require_browser()
    import mlflow

    tmp = tmp_path
    uri = f"sqlite:///{tmp}/mlflow.db"
    which = os.environ.get("LIGHTNING_SCALING_E2E_DEMO", "quick")
    if which not in DEMOS:
        pytest.fail(f"LIGHTNING_SCALING_E2E_DEMO must be one of {sorted(DEMOS)}, got {which!r}")
    experiment, flags = DEMOS[which]

    # 1. The (quick) demo, as a user runs it.
    t0 = time.perf_counter()
    demo = subprocess.run(
        [sys.executable, "-m", "lightning_scaling.cli", "sweep", *flags, "--tracking-uri", uri],
        cwd=tmp, env=env(), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
    )
    demo_s = time.perf_counter() - t0
    record_property("demo_seconds", round(demo_s, 1))
    (tmp / "demo.log").write_text(demo.stdout + "\n--- stderr ---\n" + demo.stderr)
    assert demo.returncode == 0, f"demo exited {demo.returncode}:\n{demo.stdout[-4000:]}\n{demo.stderr[-4000:]}"
    assert any(s in demo.stdout for s in ("Train next a model of", "Not enough runs", "No run size is recommended")), \
        demo.stdout[-4000:]
    assert f"mlflow ui --backend-store-uri {uri}" in demo.stdout, demo.stdout[-4000:]

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)  # read after the demo: its tags hold the description
    assert exp is not None, f"experiment {experiment!r} not found"
    summaries = client.search_runs([exp.experiment_id], filter_string="tags.`lightning_scaling.summary` = 'true'")
    assert len(summaries) == 1, [r.info.run_name for r in summaries]
    summary = summaries[0]
    assert summary.info.run_name == "scaling-law"
    sentence = _recommendation_sentence(summary.data.tags.get("mlflow.note.content", ""))
    # every training run logged its loss curve, and the later ones the forecast beside it (LossForecast)
    training = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time ASC"])
    training = [r for r in training if r.data.tags.get("lightning_scaling.summary") != "true"]
    assert all(len(client.get_metric_history(r.info.run_id, "val_loss")) >= 2 for r in training)
    forecasts = client.get_metric_history(training[-1].info.run_id, "scaling/forecast_final_loss")
    assert forecasts and all(0 < m.value < 10 for m in forecasts), training[-1].info.run_name
    # the experiment's description and the summary run's refit history (step = runs fitted, one per refit: the
    # sweep refits once per stage, the quick one has one or two)
    assert exp.tags.get("mlflow.note.content", "").startswith(f"### {EXPERIMENT_TITLE}"), exp.tags
    refits = client.get_metric_history(summary.info.run_id, REFIT_METRIC)
    steps = sorted(m.step for m in refits)
    assert len(steps) >= 1 and steps == sorted(set(steps)) and steps[-1] == len(training), steps
    figure_on_disk = Path(client.download_artifacts(summary.info.run_id, FIGURE, str(tmp / "downloaded")))
    figure_width = _png_width(figure_on_disk.read_bytes())

    # 2. The tracking server on the same store; it must serve the demo's local artifacts.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp, port)
    t1 = time.perf_counter()
    try:
        wait_healthy(server, base, tmp / "mlflow-server.log")
        status, body = get(f"{base}/get-artifact?path={FIGURE}&run_uuid={summary.info.run_id}")
        assert status == 200, (status, body[:500])
        assert body == figure_on_disk.read_bytes(), "the server serves a different frontier.png"
        status, body = get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={summary.info.run_id}&path=scaling_law")
        assert status == 200, (status, body[:500])
        listed = {f["path"] for f in json.loads(body).get("files", [])}
        assert {FIGURE, "scaling_law/isoflop.png", "scaling_law/recommendation.json"} <= listed, listed

        # 3. The browser: the run's Overview page, then its artifacts view.
        run_url = f"{base}/#/experiments/{exp.experiment_id}/runs/{summary.info.run_id}"
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp / "chromium-profile"),  # a fresh user-data dir
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT,
            )
            try:
                page = context.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.goto(f"{run_url}?{CLASSIC}")
                shown = page.get_by_text("Train next a model of" if sentence.startswith("Train") else sentence[:40])
                shown.first.wait_for(state="visible")
                _close_assistant(page)
                more = page.get_by_text("Show more", exact=True)
                if more.count():
                    more.first.click()
                page.wait_for_timeout(1000)  # let the expanded description lay out

                # The note is rendered as markdown: no literal ** is left; the sentence is bold, the table a table.
                assert "**" not in page.locator("body").inner_text(), "the description shows raw markdown"
                if sentence.startswith("Train"):
                    element = page.locator("strong", has_text=sentence[:40]).first
                    assert page.locator("table", has_text="tokens D").first.is_visible(), "no table rendered"
                else:
                    element = page.get_by_text(sentence[:40]).first
                assert element.is_visible(), f"not visible on the run page: {sentence}"
                shown_text = " ".join(element.inner_text().split())
                assert sentence in shown_text, (shown_text, sentence)
                _save(page, tmp, "overview")

                page.get_by_text("Artifacts", exact=True).first.click()
                item = page.get_by_text(Path(FIGURE).name, exact=True).first
                try:
                    item.wait_for(state="visible", timeout=20_000)
                except PlaywrightTimeout:  # the folder is collapsed: open it
                    page.get_by_text(str(Path(FIGURE).parent), exact=True).first.click()
                    item.wait_for(state="visible")
                item.click()
                # The preview is an <img> of the artifact: the one whose natural width is the PNG's own.
                shown_images = """width => Array.from(document.images).filter(img => img.complete
                    && img.naturalWidth === width && img.getBoundingClientRect().width > 100
                    && img.getBoundingClientRect().height > 50).map(img => [img.naturalWidth, img.naturalHeight])"""
                page.wait_for_function(f"width => ({shown_images})(width).length > 0", arg=figure_width)
                image = page.evaluate(shown_images, figure_width)
                assert image and image[0][0] > 0, "frontier.png is not shown as an image"
                # The artifacts view prints the artifact's absolute location on this machine; leave it out of
                # the picture (the README's screenshots are published).
                page.evaluate(
                    """() => { for (const el of document.querySelectorAll('body *')) {
                         if (el.children.length === 0 && /^Path:/.test((el.textContent || '').trim()))
                           (el.parentElement || el).style.visibility = 'hidden'; } }"""
                )
                _save(page, tmp, "frontier")

                # The experiment's own description: the state of the practice, on the experiment's page.
                page.goto(f"{base}/#/experiments/{exp.experiment_id}/runs?{CLASSIC}")
                page.get_by_text(EXPERIMENT_TITLE).first.wait_for(state="visible")
                assert "###" not in page.locator("body").inner_text(), "the experiment description shows raw markdown"
                _save(page, tmp, "experiment")

                # Each refit charted on the summary run, step = runs fitted: the recommendation's convergence.
                page.goto(f"{run_url}/model-metrics?{CLASSIC}")
                legend = page.get_by_text(f"scaling-law ({REFIT_METRIC})", exact=True).first
                legend.wait_for(state="visible")
                page.get_by_text("Step", exact=True).first.wait_for(state="visible")  # the charts' x axis: runs fitted
                _save(page, tmp, "refits")
            finally:
                context.close()
        browser_s = time.perf_counter() - t1
        record_property("browser_seconds", round(browser_s, 1))
        print(f"demo {demo_s:.0f} s, server and browser {browser_s:.0f} s; screenshots in {tmp}")
    finally:
        stop_server(server)


def _close_assistant(page) -> None:
    """The UI opens its 'MLflow Assistant' side panel on first load; close it so the run fills the page."""
    if page.get_by_text("MLflow Assistant").count():
        close = page.get_by_role("button", name="Close")
        if close.count() and close.first.is_visible():
            close.first.click()
