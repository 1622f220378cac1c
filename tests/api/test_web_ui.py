"""The web pages in a real headless Chromium: train -> progress -> model page -> verify -> label.

Every step is a click or a file chosen in a form, as a person would; the test then
reads the page and its screenshots. Screenshots are written to STL_UI_SCREENSHOTS
when it is set (to look at them), else to the test's temporary directory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from api_testing import Api, Site
from PIL import Image

from store.hashing import sha1_bytes


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("STL_UI_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def save(driver: Any, shots: Path, name: str) -> Image.Image:
    """A full-window screenshot, saved and returned decoded."""
    png = driver.get_screenshot_as_png()
    (shots / f"{name}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size[0] >= 1000  # the window, not an empty capture
    return image


def element_image(element: Any) -> Image.Image:
    return Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")


def mean_rgb(image: Image.Image, box: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Mean colour of the middle of ``box`` (x, y, w, h), away from the digits drawn at its centre."""
    x, y, w, h = box
    crop = np.asarray(image.crop((int(x + 3), int(y + 3), int(x + w * 0.3), int(y + h - 3))), np.float64)
    red, green, blue = crop.reshape(-1, 3).mean(axis=0)
    return float(red), float(green), float(blue)


def test_train_watch_progress_inspect_verify_and_label_in_a_browser(
    browser: Any, api: Api, site: Site, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 60)

    # -- train: upload the CSV and its 72 images, pick the options, submit -------------------
    driver.get(api.url + "/")
    driver.find_element(By.LINK_TEXT, "Train").click()
    wait.until(ec.presence_of_element_located((By.ID, "train-form")))
    images = sorted((site.root / "images").rglob("*.png"))
    assert len(images) == 72
    driver.find_element(By.ID, "csv-file").send_keys(str(site.root / "train.csv"))
    driver.find_element(By.ID, "image-files").send_keys("\n".join(str(p) for p in images))
    Select(driver.find_element(By.ID, "base")).select_by_value("efficientnet-lite2")
    for field, value in (("seed", "74"), ("image-size", "200")):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    save(driver, shots, "1-train-form")
    driver.find_element(By.ID, "train-button").click()

    # -- progress: the model page shows the live stage and bar until the job is done ---------
    wait.until(ec.url_contains("/ui/models/"))
    model_sha1 = driver.current_url.rsplit("/", 1)[1]
    progress = driver.find_elements(By.ID, "progress")
    assert progress, "the model page showed no progress while training"
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.ID, "stage").text in ("fetch", "features", "head", "commit")
    )
    save(driver, shots, "2-progress")
    WebDriverWait(driver, 240).until(ec.presence_of_element_located((By.ID, "accuracy")))

    # -- the model page: quality, the confusion matrix picture, recipe, provenance ------------
    assert driver.find_element(By.ID, "state").text == "ready"
    accuracy = driver.find_element(By.ID, "accuracy").text
    assert accuracy.endswith("%") and float(accuracy[:-1]) >= 80.0, accuracy
    rows = driver.find_elements(By.CSS_SELECTOR, "#per-label tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["checks", "dots", "stripes"]
    save(driver, shots, "3-model")
    matrix = driver.find_element(By.ID, "confusion")
    picture = element_image(matrix)
    origin = matrix.rect
    diagonal, off = [], []
    for cell in matrix.find_elements(By.TAG_NAME, "rect"):
        r = cell.rect
        colour = mean_rgb(picture, (r["x"] - origin["x"], r["y"] - origin["y"], r["width"], r["height"]))
        (diagonal if cell.get_attribute("data-row") == cell.get_attribute("data-col") else off).append(
            (colour, int(cell.get_attribute("data-count")))
        )
    assert len(diagonal) == 3 and len(off) == 6
    # What the picture shows: a dark blue diagonal (most photos right) and near-white elsewhere.
    for (red, green, blue), count in diagonal:
        assert blue > 200 and red < 120 and green < 120 and count >= 19, (red, green, blue, count)
    for (red, green, blue), count in off:
        if count == 0:
            assert min(red, green, blue) > 240, (red, green, blue)
    recipe = driver.find_element(By.ID, "recipe").text
    assert "image_size 200" in recipe and "random_seed 74" in recipe
    csv_link = driver.find_element(By.CSS_SELECTOR, "#provenance a.hash")
    csv_sha1 = csv_link.text
    fetched = requests.get(csv_link.get_attribute("href"), timeout=30)
    assert fetched.status_code == 200 and sha1_bytes(fetched.content) == csv_sha1
    assert fetched.content == (site.root / "train.csv").read_bytes()
    driver.find_element(By.CSS_SELECTOR, "#images summary").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "#images tbody tr")) == 72

    # -- verify: rebuilt in a fresh process on the server, the same bytes ---------------------
    driver.find_element(By.ID, "verify").click()
    WebDriverWait(driver, 300).until(
        lambda d: d.find_element(By.ID, "verify-result").text.startswith(("IDENTICAL", "DIFFERENT", "verify"))
    )
    assert driver.find_element(By.ID, "verify-result").text.startswith("IDENTICAL"), driver.find_element(
        By.ID, "verify-result"
    ).text
    save(driver, shots, "4-verified")

    # -- the models table lists it ------------------------------------------------------------
    driver.find_element(By.LINK_TEXT, "Models").click()
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-sha1="{model_sha1}"]')))
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "ready" and cells[1] == "checks, dots, stripes" and cells[2] == accuracy
    assert cells[3].endswith(" rows)") and cells[4].startswith("efficientnet-lite2, seed ")
    assert cells[6] == model_sha1
    save(driver, shots, "5-models")

    # -- label an image: upload, then the label and the probability bars ----------------------
    row.find_element(By.TAG_NAME, "a").click()
    wait.until(ec.presence_of_element_located((By.ID, "verify")))
    driver.find_element(By.LINK_TEXT, "Label an image").click()
    wait.until(ec.presence_of_element_located((By.ID, "label-form")))
    # The page offers every ready model, newest first; the shared server may have finished
    # another test's job since (its resumer completes stalled ones), so pick ours as a user would.
    Select(driver.find_element(By.ID, "model")).select_by_value(model_sha1)
    driver.find_element(By.ID, "image-file").send_keys(str(site.root / "infer" / "dots.png"))
    driver.find_element(By.ID, "label-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    assert driver.find_element(By.ID, "top-label").text == "dots"
    bars = driver.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
    assert [b.get_attribute("data-label") for b in bars][:1] == ["dots"] and len(bars) == 3
    save(driver, shots, "6-label")
    # The picture of the top bar is mostly filled with the bar colour, the others barely.
    filled = []
    for bar in bars:
        track = element_image(bar.find_element(By.CLASS_NAME, "bar-track"))
        line = [track.getpixel((x, track.size[1] // 2)) for x in range(track.size[0])]
        filled.append(sum(1 for r, g, b in line if b > 150 and r < 100) / len(line))
    assert filled[0] > 0.9 and max(filled[1:]) < 0.1, filled

    # Nothing on any page failed to load (no CDN, no missing asset, no script error).
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


#: small_dataset's folder trained with the page's defaults and a 96-pixel image size (the model
#: `stl train FOLDER --image-size 96` gives, and its hand-written CSV).
FOLDER_MODEL_SHA1 = "b2a11dd1ce2ea31b324993042d022c5ffbafddc1"


def test_a_photo_folder_or_its_zip_trains_from_the_page(browser: Any, api: Api, tmp_path: Path) -> None:
    import zipfile

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from stl_testing import small_dataset

    root = small_dataset(tmp_path / "my-photos").parent  # and its train.csv, skipped: no label folder
    archive = tmp_path / "my-photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, "my-photos/" + path.relative_to(root).as_posix())
    driver = browser
    for field, source in (("photo-folder", root), ("photo-zip", archive)):
        driver.get(api.url + "/ui/train")
        WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, field)))
        driver.find_element(By.ID, field).send_keys(str(source))
        box = driver.find_element(By.ID, "image-size")
        box.clear()
        box.send_keys("96")
        driver.find_element(By.ID, "train-button").click()
        WebDriverWait(driver, 60).until(ec.url_contains("/ui/models/"))
        assert driver.current_url.rsplit("/", 1)[1] == FOLDER_MODEL_SHA1, field
    WebDriverWait(driver, 240).until(ec.presence_of_element_located((By.ID, "accuracy")))
