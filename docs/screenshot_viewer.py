"""Screenshots of the viewer in headless Chromium at 1600 x 1000 (docs/images/viewer-*.png).

    PYTHONPATH=. python docs/screenshot_viewer.py GRAPH_OR_FOLDER DASHBOARDS OUT.png [--click-output]

``--click-output`` clicks the top output, showing its paths. Needs chromium, chromedriver and
selenium (tests/viewer/install_browser.sh). The "before" image was made with the same script
run against the viewer of commit f6709a5 (a checkout of that commit on PYTHONPATH).
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path


def main(source: str, dashboards: str, out: str, click_output: bool = False) -> None:
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from tl_circuits.viewer.server import create_app

    app = create_app(source, dashboards=dashboards, annotations_path=Path(tempfile.mkdtemp()) / "a.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        deadline = time.time() + 120
        while time.time() < deadline and driver.execute_script("return document.body.dataset.ready") != "1":
            time.sleep(0.2)
        if click_output:
            driver.find_element(By.CSS_SELECTOR, "#graph g.node.logit .shape").click()
        time.sleep(1.5)  # dashboards and labels
        driver.save_screenshot(out)
        print(driver.execute_script("return document.getElementById('counts').textContent"))  # noqa: T201
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(*args[:3], click_output="--click-output" in sys.argv)
