"""The workbench with a keyboard alone (issue 36), in the same headless Chromium over a real server
as test_workbench_browser.py: log in, fill the new fine-tune form and ask for its estimate with
Tab, the arrow keys and Enter only; then, on every workbench page, every visible control is reached
by Tab and shows a focus indicator when it is. No fine-tune runs: the server has no worker, so the
one job made for the job page stays queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# the module's own skip rules (no Chromium, no selenium, no serve extra) hold here as well
from tests.browser.test_workbench_browser import ALPHA, CONFIG, browser, text_of  # noqa: F401

pytestmark = pytest.mark.browser

import requests  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, service, write_rows  # noqa: E402

# what a page's visible controls are, and what the focused element shows
FOCUSABLE = """return [...document.querySelectorAll('a, button, input, select, textarea, [tabindex]')].filter(
  (e) => !e.disabled && e.type !== 'hidden' && e.getClientRects().length > 0
         && getComputedStyle(e).visibility !== 'hidden');"""
# what looks clickable (a pointer cursor) but is no control and inside none: a mouse-only control
MOUSE_ONLY = """const control = 'a[href], button, input, select, textarea, label, [tabindex]';
return [...document.querySelectorAll('body *')].filter((e) => e.getClientRects().length > 0
  && getComputedStyle(e).cursor === 'pointer' && !e.closest(control)).map((e) => e.outerHTML.slice(0, 80));"""
FOCUSED = """const e = document.activeElement, s = getComputedStyle(e);
return [e, e.id || e.tagName, s.outlineStyle, s.outlineWidth, s.boxShadow];"""
# each page and what shows it has loaded (its lists filled by its script)
PAGES = {"/console/data": "#data-files[data-state=loaded]", "/console/jobs": "#jobs-list[data-state=loaded]",
         "/console/jobs/new": "#job-training-file option", "/console/compare": "#compare-models[data-state=loaded]",
         "/console/ship": "#generations[data-state=loaded]"}
FORM_ORDER = ["job-model", "job-method", "job-training-file", "job-validation-file", "job-suffix", "hp-n_epochs",
              "hp-batch_size", "hp-learning_rate_multiplier", "job-settings", "job-estimate", "job-create"]


def press(driver, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def chord(driver, modifier: str, key: str) -> None:
    ActionChains(driver).key_down(modifier).send_keys(key).key_up(modifier).perform()


def focused(driver) -> list:
    return driver.execute_script(FOCUSED)


def tab_to(driver, element_id: str, limit: int = 40) -> list[str]:
    """Tab until `element_id` has focus; the ids (or tags) focused on the way, it last."""
    seen = []
    while not seen or seen[-1] != element_id:
        assert len(seen) < limit, f"{element_id} not reached by {limit} Tabs: {seen}"
        press(driver, Keys.TAB)
        seen.append(focused(driver)[1])
    return seen


def log_in_by_keyboard(driver, origin: str, key: str, path: str) -> WebDriverWait:
    driver.delete_all_cookies()
    driver.get(origin + path)
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_elements(By.ID, "login-form"))
    tab_to(driver, "login-key")
    press(driver, key, Keys.ENTER)
    wait.until(lambda d: not d.find_elements(By.ID, "login-form"))
    return wait


def upload(api: str, path: Path) -> str:
    with path.open("rb") as handle:
        response = requests.post(f"{api}/files", headers={"Authorization": f"Bearer {ALPHA}"},
                                 data={"purpose": "fine-tune"}, files={"file": (path.name, handle)}, timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def fill_the_form_by_keyboard(driver, wait: WebDriverWait, colours: str) -> None:
    """Tab through the form in reading order, choose with the arrow keys, estimate with Enter."""
    assert [i for i in tab_to(driver, "job-model") if i.startswith("job-")] == ["job-model"]
    value = lambda i: driver.find_element(By.ID, i).get_attribute("value")  # noqa: E731
    assert value("job-model") == "tiny"
    press(driver, Keys.TAB)
    assert focused(driver)[1] == "job-method" and value("job-method") == "supervised"
    beta = driver.find_element(By.ID, "hp-beta")
    methods = [value("job-method")]
    while value("job-method") != "dpo":  # down the list by arrow key: each press another method
        press(driver, Keys.ARROW_DOWN)
        assert value("job-method") != methods[-1], methods
        methods.append(value("job-method"))
    assert beta.is_displayed()  # the method's own field follows a keyboard choice
    press(driver, Keys.ARROW_UP * (len(methods) - 1))
    assert value("job-method") == "supervised" and not beta.is_displayed()
    press(driver, Keys.TAB)
    assert focused(driver)[1] == "job-training-file" and value("job-training-file") != colours  # the newest first
    press(driver, Keys.ARROW_DOWN)
    assert value("job-training-file") == colours
    on_the_way = tab_to(driver, "job-settings")
    chord(driver, Keys.CONTROL, "a")
    press(driver, json.dumps(TINY_SETTINGS))
    on_the_way += tab_to(driver, "job-estimate")
    assert on_the_way == FORM_ORDER[3:10]
    press(driver, Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#estimate-result .estimate-steps"))
    assert text_of(driver, "#estimate-result .estimate-steps") == "6"
    chord(driver, Keys.SHIFT, Keys.TAB)
    assert focused(driver)[1] == "job-settings"  # and back again with Shift+Tab


def every_control_reached_and_shown(driver, page: str) -> None:
    """Tab past the end of the page: each visible control gets focus, and each focus is visible."""
    controls = driver.execute_script(FOCUSABLE)
    assert controls, page
    assert not driver.execute_script(MOUSE_ONLY), f"{page}: looks clickable, is no control"
    reached, unmarked = set(), []
    for _ in range(len(controls) + 3):
        press(driver, Keys.TAB)
        element, name, style, width, shadow = focused(driver)
        if name in ("BODY", "HTML"):
            continue
        reached.add(element)
        if (style == "none" or width == "0px") and shadow == "none":
            unmarked.append(name)
    missed = [c.get_attribute("id") or c.get_attribute("outerHTML")[:80] for c in controls if c not in reached]
    assert not missed, f"{page}: not reached by Tab: {missed}"
    assert not unmarked, f"{page}: no visible focus indicator on {unmarked}"


def test_the_workbench_works_with_a_keyboard_alone(browser, tmp_path: Path, tiny_model_dir: Path):  # noqa: F811
    rows = list({json.dumps(row): row for row in chat_rows(60)}.values())[:24]
    colours = write_rows(tmp_path / "colours.jsonl", rows + [rows[0]])
    other = write_rows(tmp_path / "other.jsonl", rows[:10])
    with service(tmp_path, tiny_model_dir, serve_config=CONFIG, workers=0) as running:
        origin = running.base_url.removesuffix("/v1")
        colours_id = upload(running.base_url, colours)
        upload(running.base_url, other)  # the newest: the form's first choice
        wait = log_in_by_keyboard(browser, origin, ALPHA, "/console/jobs/new")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#job-training-file option")) == 2)
        fill_the_form_by_keyboard(browser, wait, colours_id)

        job = requests.post(f"{running.base_url}/fine_tuning/jobs", headers={"Authorization": f"Bearer {ALPHA}"},
                            json={"model": "tiny", "training_file": colours_id}, timeout=60)
        job.raise_for_status()  # queued for good: no worker takes it
        job_id = job.json()["id"]
        pages = {**PAGES, f"/console/jobs/{job_id}": "#job-status[class^=status-]"}
        for page, loaded in pages.items():
            browser.get(origin + page)
            wait.until(lambda d, loaded=loaded: d.find_elements(By.CSS_SELECTOR, loaded))
            every_control_reached_and_shown(browser, page)
