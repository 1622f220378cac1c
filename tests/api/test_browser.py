"""Swagger UI in a real headless Chromium: the page loads offline and runs a request against the API.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); without them
this fails with a message naming the packages rather than skipping.
"""

from __future__ import annotations

import json

import pytest
from api_testing import Api, Site

pytestmark = pytest.mark.browser


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
