"""This directory's service (`api`: trusted local data), a headless Chromium; site, strict_api and
trained_model are shared."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fixtures import site, strict_api, trained_model
from api_testing import Api, Site, run_api

__all__ = ["api", "browser", "site", "strict_api", "trained_model"]


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Api]:
    """The service as deployed for trusted local data: only the file server's host:port is exempt."""
    tmp = tmp_path_factory.mktemp("api")
    env = {
        "FETCH_ALLOW_HOSTS": f"127.0.0.1:{site.port}",
        "IMPORT_ROOT": str(site.root),
        "MODEL_URI_ALLOW": str(site.root),
        "RETRY_BACKOFF": "1",
    }
    with run_api(tmp, env) as server:
        yield server


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(Path(p).name)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install Debian's packages with "
            "`apt-get install chromium chromium-driver` to run the Swagger UI browser test"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
