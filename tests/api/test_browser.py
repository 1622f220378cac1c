"""Swagger UI in a real headless Chromium: the page loads offline and runs a request against the API.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); without them
this fails with a message naming the packages rather than skipping.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_testing import Api, Site

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


def test_swagger_ui_runs_a_request(browser: object, api: Api) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)
    driver.get(api.url + "/api/doc")  # type: ignore[attr-defined]

    # The document was fetched and rendered: the title and our operations appear.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".information-container .title")))
    assert "static-transfer-learning" in driver.find_element(By.CSS_SELECTOR, ".title").text  # type: ignore[attr-defined]
    operation = wait.until(ec.presence_of_element_located((By.ID, "operations-service-healthz")))
    for op in ("operations-models-train", "operations-models-infer", "operations-objects-getObject"):
        assert driver.find_elements(By.ID, op), op  # type: ignore[attr-defined]

    # Open GET /healthz, "Try it out", "Execute", and read the live response.
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-service-healthz .try-out__btn"))
    ).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-service-healthz .execute"))).click()
    body = wait.until(
        ec.presence_of_element_located(
            (
                By.CSS_SELECTOR,
                "#operations-service-healthz .live-responses-table .response-col_description pre",
            )
        )
    )
    status = driver.find_element(  # type: ignore[attr-defined]
        By.CSS_SELECTOR, "#operations-service-healthz .live-responses-table .response .response-col_status"
    )
    assert status.text.strip() == "200"
    answer = json.loads(body.text)
    assert answer["status"] == "ok"
    assert isinstance(answer["pid"], int)

    # Nothing on the page tried to reach the internet (it would show as a failed load).
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert not errors, errors


def test_swagger_ui_labels_an_uploaded_image(
    browser: object, api: Api, site: Site, trained_model: str
) -> None:
    # "Try it out" on /infer as multipart, a file in `image`, the `images` array left empty
    # (Swagger UI sends it as an empty field, which the API used to refuse as unknown).
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)
    driver.get(api.url + "/api/doc")  # type: ignore[attr-defined]
    op = "#operations-models-infer"
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} .opblock-summary"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} .try-out__btn"))).click()
    content_type = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"{op} .opblock-section-request-body select"))
    )
    Select(content_type).select_by_value("multipart/form-data")
    model_field = wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"{op} .opblock-section-request-body input[type=text]")
        )
    )
    model_field.clear()
    model_field.send_keys(trained_model)
    files = driver.find_elements(By.CSS_SELECTOR, f"{op} .opblock-section-request-body input[type=file]")  # type: ignore[attr-defined]
    files[0].send_keys(str(site.root / "infer" / "dots.png"))
    driver.find_element(By.CSS_SELECTOR, f"{op} .execute").click()  # type: ignore[attr-defined]
    body = wait.until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"{op} .live-responses-table .response-col_description pre")
        )
    )
    status = driver.find_element(
        By.CSS_SELECTOR, f"{op} .live-responses-table .response .response-col_status"
    )  # type: ignore[attr-defined]
    assert status.text.strip() == "200", body.text
    probabilities = json.loads(body.text)
    assert max(probabilities, key=probabilities.get) == "dots"
