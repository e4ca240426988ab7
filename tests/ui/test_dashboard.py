"""The dashboard (/ui) in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): it
shows a taught brain's real data as plots, follows jobs, rolls back, and asks for a key when the
service has keys. Skipped without Chromium or Playwright; under CI=true that is a failure."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brain_client import Client
from service.db import upgrade
from tests.conftest import IN_CI, make_settings, serve
from tests.service.test_api import DIM, SMALL, clusters

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if reason:
        if IN_CI:
            pytest.fail(f"dashboard test cannot run: {reason}", pytrace=False)
        pytest.skip(f"dashboard test skipped: {reason}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def teach(url: str, api_key: str | None = None) -> dict:
    """Brain "b": task t1 (a, b), task t2 (c, d), evaluated after each and after a sleep."""
    with Client(url, api_key=api_key) as client:
        client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
        brain = client.brain("b")
        t1, t2 = clusters(80, ["a", "b"], seed=0), clusters(80, ["c", "d"], seed=1)
        h1, h2 = clusters(40, ["a", "b"], seed=2), clusters(40, ["c", "d"], seed=3)
        brain.learn(*t1, task="t1", wait=True)
        brain.evaluate(*h1, task="t1")
        brain.learn(*t2, task="t2", wait=True)
        brain.evaluate(*h1, task="t1")
        brain.evaluate(*h2, task="t2")
        brain.sleep(wait=True)
        brain.evaluate(*h1, task="t1")
        brain.evaluate(*h2, task="t2")
        served = brain.predict(h2[0][:10])
        client.wait(brain.feedback([p.id for p in served.predictions], h2[1][:10]).job)
        return {"metrics": brain.metrics(), "versions": brain.versions(), "replay": client.http.get("/v1/brains/b/replay").json()}


def open_dashboard(browser, url: str, brain: str = "b"):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/ui/#brain={brain}")
    return page, errors


def test_dashboard_plots_a_brains_real_data_and_rolls_back(browser, live_server: str) -> None:
    taught = teach(live_server)
    metrics, replay = taught["metrics"], taught["replay"]
    page, errors = open_dashboard(browser, live_server)
    cells = len(metrics.versions) * len(metrics.tasks)
    page.wait_for_function(f"document.querySelectorAll('#matrix rect.cell').length === {cells}", timeout=15_000)

    # the heatmap holds the metrics' matrix, cell by cell, in row order
    shown = page.eval_on_selector_all("#matrix rect.cell", "cells => cells.map(c => c.dataset.value)")
    expected = [v for row in metrics.accuracy_matrix for v in row]
    assert [float(v) if v else None for v in shown] == pytest.approx(expected)
    # one forgetting curve per task; one replay bar per label, summing to what the buffer holds
    assert page.eval_on_selector_all("#curves polyline.series", "ls => ls.map(l => l.dataset.name)") == ["t1", "t2"]
    bars = page.eval_on_selector_all("#replay rect.bar", "bs => bs.map(b => Number(b.dataset.value))")
    assert len(bars) == 4 and sum(bars) == replay["size"] == sum(replay["per_label"].values())
    assert page.locator("#sleeps rect.bar").count() == 1
    # the prequential accuracy of the ten labelled predictions: one bucket, in the plot and the summary
    preq = Client(live_server).brain("b").metrics().prequential
    assert page.eval_on_selector_all("#prequential polyline.series", "ls => ls.map(l => l.dataset.name)") == ["prequential"]
    assert page.locator("#prequential circle").count() == len(preq.over_time) == 1
    assert page.locator("#summary dd[data-field='prequential accuracy']").inner_text() == (
        f"{100 * preq.accuracy:.1f}% of 10")
    assert page.locator("#jobs tbody tr", has_text="succeeded").count() >= 3  # two wakes and a sleep
    assert page.locator("#summary dd[data-field='average accuracy']").inner_text() == f"{100 * metrics.average_accuracy:.1f}%"

    # the heatmap as pixels: several colours, mostly not background
    image = Image.open(io.BytesIO(page.locator("#matrix").screenshot())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    assert len({tuple(p) for p in pixels[:: max(1, len(pixels) // 5000)]}) > 8
    assert (pixels.min(axis=1) < 235).mean() > 0.3
    curves = np.asarray(Image.open(io.BytesIO(page.locator("#curves").screenshot())).convert("RGB"))
    assert ((curves[..., 2] > 150) & (curves[..., 0] < 120)).sum() > 100  # the first (blue) curve is drawn

    # roll back to the first version from its button; the service agrees
    versions = taught["versions"]
    oldest = min(v.number for v in versions.versions)
    page.click(f"#versions button[data-version='{oldest}']")
    page.wait_for_selector(f"#versions tr.current button[data-version='{oldest}']", timeout=10_000)
    with Client(live_server) as client:
        assert client.brain("b").versions().current == oldest
    assert errors == []


def test_dashboard_follows_a_running_job(browser, live_server: str) -> None:
    with Client(live_server) as client:
        client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
        client.brain("b").learn(*clusters(40, ["a", "b"], seed=0), task="t1", wait=True)
        page, errors = open_dashboard(browser, live_server)
        page.wait_for_selector("#jobs tbody tr")
        before = page.locator("#jobs tbody tr").count()
        started = client.brain("b").sleep(wait=True)
    # it refreshes on its own: the sleep appears without a reload
    page.wait_for_function(f"document.querySelectorAll('#jobs tbody tr').length > {before}", timeout=15_000)
    assert page.locator("#jobs tbody tr").first.inner_text().startswith("sleep")
    assert started.state == "succeeded" and errors == []


def test_dashboard_asks_for_the_key_when_the_service_has_keys(browser, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var", admin_key="admin-secret")
    upgrade(settings.database_url)
    with serve(settings) as url:
        with Client(url, api_key="admin-secret") as admin:
            admin.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
        page, _ = open_dashboard(browser, url)
        page.wait_for_selector("#status.error")
        assert "401" in page.inner_text("#status")
        page.fill("#key", "admin-secret")
        page.click("#key-form button")
        page.wait_for_selector("#brains a:has-text('b')")
        page.wait_for_selector("#brain:not([hidden])")
        assert page.inner_text("#brain-name") == "b"


def test_dashboard_lists_drift_events(browser, live_server: str, settings) -> None:
    """A recorded drift event (as the drift watch writes it) shows in the brain's table."""
    from service.db import Database
    from service.tables import Brain, DriftRecord

    with Client(live_server) as client:
        client.create_brain("b", kind="vector", shape=[DIM], params=SMALL)
        client.brain("b").learn(*clusters(20, ["a", "b"], seed=0), task="t1", wait=True)
    db = Database(settings)
    try:
        with db.session() as s:
            brain = s.query(Brain).filter_by(name="b").one()
            s.add(DriftRecord(brain_id=brain.id, signal="error", detector="adwin", version=2, slept="job-1",
                              statistic={"index": 340, "change_at": 301, "before": 0.02, "after": 0.97}))
    finally:
        db.dispose()
    page, errors = open_dashboard(browser, live_server)
    page.wait_for_selector("#drift tbody tr", timeout=15_000)
    cells = page.eval_on_selector_all("#drift tbody tr td", "tds => tds.map(t => t.textContent)")
    assert cells[1:] == ["error", "adwin", "v2", "0.020 → 0.970", "sleep started"]
    assert page.locator("#no-drift").is_hidden()
    assert errors == []
