"""The Inspect page in a real browser: upload a .keras file and a zip of images, see the diagnosis."""

from __future__ import annotations

from tests.browser import BROWSER_MODULE, chromium, streamlit_server
from tests.test_browser import ARTIFACTS, screenshot_on_failure

pytestmark = BROWSER_MODULE


def test_upload_a_model_and_a_zip_and_see_the_diagnosis(tmp_path, tiny_data):
    from tests.test_inspect_page import upload_files

    model, images = upload_files(tiny_data, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(home) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        with screenshot_on_failure(page, "browser-inspect"):
            page.goto(f"{url}/inspect")
            inputs = page.locator('[data-testid="stFileUploader"] input[type="file"]')
            inputs.first.wait_for(state="attached", timeout=60_000)
            inputs.nth(0).set_input_files(str(model))
            inputs.nth(1).set_input_files(str(images))
            button = page.get_by_role("button", name="Inspect", exact=True)
            page.wait_for_function(
                "() => [...document.querySelectorAll('button')].some(b => b.innerText.trim().endsWith('Inspect') && !b.disabled)", timeout=60_000
            )
            button.click()
            page.get_by_text("3 BatchNormalization layers").wait_for(timeout=180_000)
            page.get_by_text("Findings", exact=True).wait_for(timeout=30_000)
            page.get_by_role("button", name="Recalibrate").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "browser-inspect.png"), full_page=True)
