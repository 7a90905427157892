"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): log in, chat with the tiny model, thumb the reply down, send the better answer, and
find both in the store. `make test-browser` runs it; it skips where Chromium is not installed.

Set TUNESMITH_CONSOLE_SCREENSHOT=PATH to keep a picture of the page after the round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

from tests.browser.chromium import CHROMEDRIVER, CHROMIUM  # noqa: E402

if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver",
                allow_module_level=True)
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.browser.chromium import headless_chromium  # noqa: E402
from tests.integration.test_console import make_report_run, serve_report_run  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.completions import Completions  # noqa: E402
from tunesmith.store.db import open_store, sqlite_url  # noqa: E402

KEY = "k-browser"
CORRECTION = "A better answer:\nsay <b>hello</b> & mean it."


@pytest.fixture()
def browser(tmp_path: Path):
    yield from headless_chromium(tmp_path, 1100)


@pytest.fixture()
def server(tiny_model_dir: Path, tmp_path: Path):
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    serve_report_run(models, make_report_run(tmp_path / "demo-run"))
    store_url = sqlite_url(tmp_path / "completions.db")
    with running(create_app(models, ServeConfig(api_keys=(KEY,), store_url=store_url, max_tokens=16))) as base_url:
        yield base_url.removesuffix("/v1"), store_url


def log_in(browser, origin: str) -> WebDriverWait:
    wait = WebDriverWait(browser, 120)
    browser.get(origin + "/")
    wait.until(lambda d: d.find_elements(By.ID, "login-form"))  # no cookie yet: sent to the login form
    browser.find_element(By.ID, "login-key").send_keys(KEY)
    browser.find_element(By.ID, "login-submit").click()
    return wait


def test_a_chat_in_the_browser_leaves_its_thumb_and_correction_in_the_store(browser, server) -> None:
    origin, store_url = server
    wait = log_in(browser, origin)

    chat = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '.chat[data-model="tiny"]'))
    chat.find_element(By.CLASS_NAME, "chat-input").send_keys("Is this film good?")
    chat.find_element(By.CLASS_NAME, "chat-send").click()
    reply = wait.until(lambda d: chat.find_element(By.CSS_SELECTOR, ".message.assistant[data-completion-id]"))
    completion_id = reply.get_attribute("data-completion-id")
    status = reply.find_element(By.CLASS_NAME, "feedback-status")

    reply.find_element(By.CLASS_NAME, "thumb-down").click()
    wait.until(lambda d: status.text == "feedback saved")
    assert "chosen" in reply.find_element(By.CLASS_NAME, "thumb-down").get_attribute("class")
    reply.find_element(By.CLASS_NAME, "correction-input").send_keys(CORRECTION)
    reply.find_element(By.CLASS_NAME, "correction-send").click()
    wait.until(lambda d: not reply.find_element(By.CLASS_NAME, "correction-input").is_enabled()
               and status.text == "feedback saved")
    if os.environ.get("TUNESMITH_CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["TUNESMITH_CONSOLE_SCREENSHOT"])

    completions = Completions(open_store(store_url))
    stored = completions.get(None, completion_id)
    assert stored.model == "tiny" and stored.messages == [{"role": "user", "content": "Is this film good?"}]
    assert reply.find_element(By.CLASS_NAME, "content").get_attribute("textContent") == stored.answer
    kept = [(row.score, row.correction) for row in completions.feedback([completion_id])[completion_id]]
    assert kept == [(-1, None), (None, CORRECTION)]  # one row per click: the thumb, then the better answer
    assert "tunesmith_key" not in browser.execute_script("return document.cookie")  # HttpOnly: no script reads it


def test_a_run_report_opens_from_the_page_with_its_images_drawn(browser, server) -> None:
    origin, _ = server
    wait = log_in(browser, origin)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '.model[data-model="demo-run"] .report-link')).click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.report table"))
    images = browser.find_elements(By.CSS_SELECTOR, "article.report img")
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete", image) for image in images))
    drawn = [browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
             for image in images]
    assert drawn == [[40, 20], [30, 30]]  # loss.png and eval/comparison.png, through the run's files route
