"""The console as a workbench, in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) over a real server and a real worker process: upload a file on the data page
and read its check, start a fine-tune of the tiny model from the form, watch its loss drawn, chat
with the result beside the base, export it, then log in with a second project's key and find none
of it. `make test-browser` runs it; it skips where Chromium is not installed.

Set TUNESMITH_CONSOLE_SCREENSHOTS=FOLDER to keep a picture of each page at 375 and 1440 px."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

from tests.browser.chromium import CHROMEDRIVER, CHROMIUM  # noqa: E402

if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver",
                allow_module_level=True)
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from tests.browser.chromium import headless_chromium  # noqa: E402
from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, service, write_rows  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402

ALPHA, BETA = "k-alpha", "k-beta"
CONFIG = ServeConfig(api_keys=(ALPHA, BETA), key_projects={ALPHA: "alpha", BETA: "beta"}, max_tokens=8)
WIDTHS = (375, 1440)


@pytest.fixture()
def browser(tmp_path: Path):
    yield from headless_chromium(tmp_path, 1440)


def log_in(browser, origin: str, key: str, path: str = "/console/jobs") -> WebDriverWait:
    browser.delete_all_cookies()
    browser.get(origin + path)
    wait = WebDriverWait(browser, 300)
    wait.until(lambda d: d.find_elements(By.ID, "login-form"))
    browser.find_element(By.ID, "login-key").send_keys(key)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: not d.find_elements(By.ID, "login-form"))
    return wait


def shoot(browser, name: str) -> None:
    """Each width's picture of the whole page, where TUNESMITH_CONSOLE_SCREENSHOTS names a folder."""
    folder = os.environ.get("TUNESMITH_CONSOLE_SCREENSHOTS")
    if not folder:
        return
    for width in WIDTHS:
        browser.set_window_size(width, 900)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(max(height + 140, 600), 4000))
        browser.save_screenshot(str(Path(folder) / f"console-{name}-{width}.png"))
    browser.set_window_size(1440, 900)


def shows_no_server_path(browser, *paths: Path) -> bool:
    """Nothing on the page names where things are on the server (a served base's folder, the jobs folder)."""
    source = browser.page_source
    return not any(str(path) in source for path in paths)


def text_of(browser, selector: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent")


def test_upload_fine_tune_watch_compare_and_export_from_the_browser(browser, tmp_path: Path, tiny_model_dir: Path):
    rows = list({json.dumps(row): row for row in chat_rows(60)}.values())[:24]  # 24 different rows
    rows.append(rows[0])  # and one exact duplicate, for the audit to name
    data = write_rows(tmp_path / "colours.jsonl", rows)
    with service(tmp_path, tiny_model_dir, serve_config=CONFIG) as running:
        origin = running.base_url.removesuffix("/v1")
        wait = log_in(browser, origin, ALPHA, "/console/data")

        # 1. data: upload, the check by line, the audit, the rows as the model sees them
        browser.find_element(By.ID, "data-file").send_keys(str(data))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#validation .validation-ok"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview mark.trained"))
        assert "25 rows" in text_of(browser, "#validation")
        audit = text_of(browser, "#audit")
        assert "1 groups of exact duplicates" in audit and ":1, " in audit and ":25 (similarity 1.00)" in audit
        trained = [m.get_attribute("textContent") for m in browser.find_elements(By.CSS_SELECTOR, "#preview mark.trained")]
        first_reply = rows[0]["messages"][1]["content"]
        assert any(first_reply in span for span in trained)  # the reply is what the loss sees
        assert not any("Repeat the word" in span for span in trained)  # the question is not
        assert shows_no_server_path(browser, tmp_path, tiny_model_dir)
        shoot(browser, "data")

        # 2. new fine-tune: the form, its estimate, then the job
        browser.find_element(By.ID, "data-fine-tune").click()
        wait.until(lambda d: d.find_elements(By.ID, "job-form"))
        assert Select(browser.find_element(By.ID, "job-training-file")).first_selected_option.text.startswith("colours.jsonl")
        Select(browser.find_element(By.ID, "job-model")).select_by_value("tiny")
        settings = browser.find_element(By.ID, "job-settings")
        settings.clear()
        settings.send_keys(json.dumps(TINY_SETTINGS))
        browser.find_element(By.ID, "job-suffix").send_keys("colours")
        browser.find_element(By.ID, "job-estimate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#estimate-result .estimate-steps"))
        assert text_of(browser, "#estimate-result .estimate-steps") == "6"
        assert shows_no_server_path(browser, tmp_path, tiny_model_dir)
        shoot(browser, "new-job")
        browser.find_element(By.ID, "job-create").click()

        # 3. the job: loss points drawn as they arrive, then success
        wait.until(lambda d: "/console/jobs/ftjob-" in d.current_url)
        job_id = browser.current_url.rsplit("/", 1)[-1]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#loss-chart circle.point-train")) >= 2)
        wait.until(lambda d: text_of(d, "#job-status") in ("succeeded", "failed", "cancelled"))
        assert text_of(browser, "#job-status") == "succeeded", text_of(browser, "#job-error")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#loss-chart circle.point-train")) == 6)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#checkpoints li")) == 2)
        model = text_of(browser, "#job-model-name")
        assert model.startswith("ft:tiny:colours:")
        assert shows_no_server_path(browser, tmp_path, tiny_model_dir)
        shoot(browser, "job")

        # 4. compare: one prompt, the base and the fine-tuned model side by side
        browser.find_element(By.ID, "job-compare").click()
        wait.until(lambda d: d.find_elements(By.ID, "compare-form"))
        checked = [box.get_attribute("value") for box in browser.find_elements(By.CSS_SELECTOR, ".compare-model:checked")]
        assert checked == ["tiny", model]
        browser.find_element(By.ID, "compare-prompt").send_keys("Repeat the word red 2 times.")
        browser.find_element(By.ID, "compare-send").click()
        for name in ("tiny", model):
            wait.until(lambda d, name=name: d.find_element(
                By.CSS_SELECTOR, f'.answer[data-model="{name}"]').get_attribute("data-state") == "answered")
        assert text_of(browser, f'.answer[data-model="{model}"] .answer-model') == model
        assert shows_no_server_path(browser, tmp_path, tiny_model_dir)
        shoot(browser, "compare")

        # 5. ship: export, with the export's own check shown
        browser.get(f"{origin}/console/ship?job={job_id}")
        wait.until(lambda d: d.find_elements(By.ID, "export-form"))
        Select(browser.find_element(By.ID, "export-format")).select_by_value("gguf-lora")
        browser.find_element(By.ID, "export-start").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#export-result .export-done, #export-result .error"))
        assert browser.find_elements(By.CSS_SELECTOR, "#export-result .export-done"), text_of(browser, "#export-result")
        assert "LoRA pairs" in text_of(browser, "#export-result .export-check")
        download = browser.find_element(By.CSS_SELECTOR, "#export-result .export-file a").get_attribute("href")
        assert download.endswith(".gguf")
        assert shows_no_server_path(browser, tmp_path, tiny_model_dir)
        shoot(browser, "ship")

        # a second project's key: none of it
        wait = log_in(browser, origin, BETA, "/console/jobs")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs-list[data-state=loaded]"))
        assert job_id not in browser.page_source
        browser.get(f"{origin}/console/jobs/{job_id}")
        wait.until(lambda d: d.find_elements(By.ID, "message"))
        assert "no fine-tuning job" in text_of(browser, "#message")
        browser.get(f"{origin}/console/compare")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#compare-models[data-state=loaded]"))
        assert model not in browser.page_source and "tiny" in browser.page_source
        browser.get(f"{origin}/console/data")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#data-files[data-state=loaded]"))
        assert "colours.jsonl" not in browser.page_source
