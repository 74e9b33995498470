"""The shareable HTML report, opened in a real headless browser (Debian's chromium, driven by Playwright)."""

import shutil

import pandas as pd
import pytest
from test_cache import featx_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, fashion_manifest):
    digits = fashion_manifest.parent.parent / "digits" / "manifest.csv"
    work = tmp_path_factory.mktemp("report")
    subset = pd.read_csv(digits).groupby("label").head(24)
    subset.assign(path=[str(digits.parent / p) for p in subset["path"]]).to_csv(
        work / "manifest.csv", index=False
    )
    page = work / "report.html"
    result = featx_cli(
        "compare",
        work / "manifest.csv",
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        work / "cache",
        "--cv",
        "3",
        "--classifiers",
        "logreg,knn",
        "--report",
        "--html",
        page,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return page, result.stdout


def test_the_page_is_self_contained(report_page):
    page, stdout = report_page
    text = page.read_text()
    assert f"html: {page}" in stdout
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert 'src="data:image/png;base64,' in text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_it_renders_in_a_real_browser_with_its_figure_verdict_and_setup(report_page):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path, stdout = report_page
    requests = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri())
            verdict = page.inner_text("#verdict")
            figure = page.eval_on_selector(
                "#figure", "img => [img.complete, img.naturalWidth, img.naturalHeight]"
            )
            headers = page.eval_on_selector_all("th", "cells => cells.map(c => c.textContent)")
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert verdict.startswith("Transfer") and verdict in stdout  # the same sentence the terminal printed
    assert figure[0] and figure[1] > 500 and figure[2] > 200  # the inline PNG decoded
    assert {"backbone", "weights", "precision", "folds", "featx", "images", "estimator"} <= set(headers)
    assert requests == [page_path.as_uri()]  # nothing fetched from anywhere else
    assert len(screenshot) > 20_000
