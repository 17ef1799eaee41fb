"""report.html in a real browser: headless Chromium loads it offline and renders its tables and plots (slow).

Needs Debian's ``chromium`` package (``apt-get install -y chromium chromium-driver``).
"""

import shutil
import subprocess

import pytest

from dashrl.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BAR_BLUE = (0x4C, 0x72, 0xB0)  # the sampling bars of time_breakdown.png


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=180, check=True)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium package")
def test_report_renders_in_headless_chromium(tiny_study_args, html_elements, tmp_path):
    import matplotlib.image

    assert main(tiny_study_args) == 0
    report = (tmp_path / "study" / "report.html").as_uri()
    # the DOM after Chromium parsed and laid out the page: every table and image is there
    dom = html_elements(_chromium(tmp_path, "--dump-dom", report).stdout)
    assert len(dom.all("table")) == 7 and len(dom.all("img")) == 4
    assert all(img["src"].startswith("data:image/png;base64,") for img in dom.all("img"))
    assert "Accuracy in and out of distribution" in "".join(dom.text)
    # a screenshot of the rendered page shows the embedded plots: the breakdown's blue bars are on screen
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,6000", f"--screenshot={shot}", report)
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round()
    blue = ((abs(pixels - BAR_BLUE) <= 2).all(axis=-1)).sum()
    assert blue > 500, f"only {blue} pixels of the bars' blue: the plots did not render"
