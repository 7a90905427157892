"""Headless Chromium from the system's packages, for the browser tests (each test file checks first
that the packages and selenium are there)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def headless_chromium(folder: Path, width: int) -> Iterator:
    """A driver `width` px wide, its profile in `folder`; both paths given, so selenium-manager (which
    would go to the network for a driver) is never asked. Quit when the generator closes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},900", f"--user-data-dir={folder / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
