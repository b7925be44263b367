"""The MLflow UI over a real pipeline run, as a user sees it: ``mlflow ui --app-name growth`` on
127.0.0.1 driven by Debian's Chromium (headless, through Playwright). ``make ui-check`` runs it;
screenshots go to ``$UI_SCREENSHOTS`` (default: ``ui-screenshots/`` in the run's temp folder,
printed)."""

import os
import shutil
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port, served

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ui(tiny_pipeline):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it)")
    port = free_port()
    command = [
        BIN / "mlflow", "ui", "--app-name", "growth", "--host", "127.0.0.1", "--port", port,
        "--backend-store-uri", tiny_pipeline.uri, "--workers", "1",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    with served(command, base + "health", log=tiny_pipeline.folder / "ui.log"):
        yield base


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tiny_pipeline):
    folder = Path(os.environ.get("UI_SCREENSHOTS") or tiny_pipeline.folder / "ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture
def page(browser):
    """A browser that never opened MLflow: a fresh context, nothing saved."""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    yield page
    context.close()


def ids(run):
    c = MlflowClient(run.uri)
    exp = c.get_experiment_by_name("tiny-e2e")
    runs = c.search_runs([exp.experiment_id])
    by_stage = {}
    for r in runs:
        by_stage.setdefault(r.data.tags["stage"], []).append(r.info.run_id)
    return exp.experiment_id, by_stage


def settle(page, text: str) -> str:
    page.wait_for_selector(f"text={text}", timeout=60_000)
    page.wait_for_timeout(1500)  # charts and lazy cells draw after the first text
    return page.inner_text("body")


def test_a_new_user_lands_on_the_runs_in_model_training_mode(ui, page, tiny_pipeline, shots):
    experiment_id, by_stage = ids(tiny_pipeline)
    page.goto(f"{ui}#/experiments/{experiment_id}")
    text = settle(page, "pipeline-")
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    assert "Detect Issues" not in text and "Token Usage" not in text  # not the GenAI overview
    # the pipeline's children, and the search's trials, one expander each
    page.locator("[role=gridcell]", has_text="pipeline-").first.locator("button").first.click()
    page.wait_for_selector("text=final", timeout=30_000)
    page.locator("[role=gridcell]", has_text="search").first.locator("button").first.click()
    text = settle(page, "trial-")
    for name in ("screen", "search", "final", "trial-"):
        assert name in text
    assert "digits-train" in text  # the Dataset column
    page.screenshot(path=shots / "runs.png")


def test_a_trial_shows_its_growth_and_system_metrics(ui, page, tiny_pipeline, shots):
    experiment_id, by_stage = ids(tiny_pipeline)
    trial = by_stage["trial"][0]
    page.set_viewport_size({"width": 1500, "height": 2600})  # every chart drawn, none lazy
    page.goto(f"{ui}#/experiments/{experiment_id}/runs/{trial}/model-metrics")
    text = settle(page, "growth_event")
    for metric in ("depth", "params", "width_0", "val_accuracy"):
        assert metric in text
    page.screenshot(path=shots / "trial-metrics.png")
    page.set_viewport_size({"width": 1500, "height": 950})
    page.goto(f"{ui}#/experiments/{experiment_id}/runs/{trial}/system-metrics")
    settle(page, "cpu_utilization_percentage")
    page.screenshot(path=shots / "trial-system-metrics.png")


def test_the_final_run_shows_its_datasets_description_and_model(ui, page, tiny_pipeline, shots):
    experiment_id, by_stage = ids(tiny_pipeline)
    (final,) = by_stage["final"]
    page.goto(f"{ui}#/experiments/{experiment_id}/runs/{final}")
    text = settle(page, "About this run")
    assert "Final fit:" in text  # the description
    assert "digits-train" in text  # the Datasets section, the training split first
    assert "digits-test" in text  # the test metrics name the split they were measured on
    page.screenshot(path=shots / "final-run.png")
    page.get_by_text("+2").first.click()  # the other two splits
    page.wait_for_selector("text=digits-validation", timeout=30_000)


def test_the_registered_version_has_a_schema(ui, page, tiny_pipeline, shots):
    page.goto(f"{ui}#/models/tiny-e2e/versions/1")
    text = settle(page, "Schema")
    assert "Inputs (0)" not in text and "Outputs (0)" not in text
    assert "Inputs (1)" in text and "Outputs (1)" in text
    page.screenshot(path=shots / "model-version.png", full_page=True)


def test_the_logged_model_is_listed_with_its_run_and_version(ui, page, tiny_pipeline, shots):
    experiment_id, _ = ids(tiny_pipeline)
    page.goto(f"{ui}#/experiments/{experiment_id}/models")
    text = settle(page, "Ready")
    # the Models tab: the logged model, the final run it came from, its registered version
    # (its metrics are columns a user adds; test_pipeline_e2e reads them from the store)
    lines = text.split("\n")
    assert "model" in lines and "final" in lines and "tiny-e2e" in lines and "v1" in lines
    page.screenshot(path=shots / "logged-models.png")
