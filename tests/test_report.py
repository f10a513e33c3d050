"""report.html, opened in a real browser."""

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import headless_chromium
from transfer import layout
from transfer.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.browser]

runner = CliRunner()


def test_report_renders_in_headless_chromium(digits_run, tmp_path):
    """The real browser: the page loads, every image decodes, and the accuracy figure is shown."""
    result = runner.invoke(app, ["report", str(digits_run), "--out", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page, "self-contained: nothing fetched"

    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        driver.get((tmp_path / "report.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)"
        )
        shown = driver.find_element(By.ID, "accuracy").text
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        driver.save_screenshot(str(tmp_path / "report.png"))
    metrics = json.loads((digits_run / layout.METRICS).read_text())
    assert len(images) >= 5 and broken == []
    assert shown == f"{metrics['val_accuracy']:.1%}"
    assert headings[:3] == ["Data", "Training curves", "Metrics on the validation split"]
    assert "Where the model looked (Grad-CAM)" in headings
    assert (tmp_path / "report.png").stat().st_size > 10_000
