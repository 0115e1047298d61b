"""The MLflow UI over a sweep's store, in headless Chromium: the run list shows the parent and its children, the
compare-runs page of the children shows their names, the param that differs and eval/auc. Screenshots are kept in
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import free_port, start_mlflow_server, stop_server
from tests.sweeps.test_sweeps import SWEEP

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """Debian's ``chromium``, installed with apt-get when missing and this user may (root, or sudo without a
    password); the test is skipped only where it cannot be installed."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"] if shutil.which("sudo") else None
    if prefix is None or not shutil.which("apt-get"):
        pytest.skip("no Chromium, and no apt-get as root or passwordless sudo to install Debian's chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run([*prefix, *command], env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return next(filter(None, map(shutil.which, BROWSERS)))


@pytest.fixture
def mlflow_server(tmp_path, mlflow_store):
    """``mlflow server`` on 127.0.0.1 over ``tmp_path/mlflow.db``, starting while the test runs its sweep; yields
    a function that waits until it answers and returns its URL."""
    # mlflow_store: the schema is there before two processes race to make it
    server, ready = start_mlflow_server(tmp_path, free_port())
    try:
        yield ready
    finally:
        stop_server(server)


@pytest.mark.slow
def test_the_mlflow_ui_shows_a_sweeps_children_and_compares_them(easyrec_main, tmp_path, monkeypatch, mlflow_server):
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main("train", "-m", "optimizer.lr=0.01,0.001", *SWEEP)
    assert code == 0, stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("easyrec").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [run.info for run in runs if "easyrec.sweep.dir" in run.data.tags]
    children = {run.info.run_id: run.info.run_name for run in runs if run.info.run_id != parent.run_id}
    assert sorted(children.values()) == ["#0 optimizer.lr=0.01", "#1 optimizer.lr=0.001"]
    ARTIFACTS.mkdir(exist_ok=True)
    url = mlflow_server()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/#/experiments/{experiment}/runs")
        page.get_by_text(parent.run_name).wait_for()
        # children are folded under their parent: open it
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for name in children.values():
            page.get_by_text(name, exact=True).wait_for()
        page.screenshot(path=ARTIFACTS / "mlflow-ui-runs.png")

        ids = urllib.parse.quote(json.dumps(list(children)))
        page.goto(f"{url}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment]))}")
        page.get_by_text("Comparing 2 Runs").wait_for()
        page.get_by_text("eval/auc").first.wait_for()
        page.screenshot(path=ARTIFACTS / "mlflow-ui-compare.png", full_page=True)
        text = page.inner_text("body")
        browser.close()
    for name in children.values():
        assert name in text
    assert "optimizer.lr" in text and "0.01" in text and "0.001" in text
    assert "eval/auc" in text
