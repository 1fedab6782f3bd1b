"""The report in a real browser: Debian's headless Chromium (tests/browser.py) opens the page made from
the committed paper-7b studies and result files, offline; no console error, every plotly figure
drawn (an SVG root with traces in each), a screenshot kept under pytest's tmp path.

A missing Chromium fails these tests (it is never a skip): the README's test command installs it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser import BrowserMissing, find_chromium, render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return find_chromium()
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from m2tune.report.page import write_report
    folder = tmp_path_factory.mktemp("browser")
    # SQLite may write a journal beside a database it opens: a copy of the committed study file
    shutil.copytree(RESULTS / "2026-12-01-h200-lean-ship", folder / "ship")
    return write_report(folder / "report.html", paths=[folder / "ship", RESULTS / "2026-12-01-h200-lean-backward" /
                                                      "summary.json"])


def test_the_report_renders_in_chromium(chromium, page, tmp_path):
    figures = page.read_text(encoding="utf-8").count("Plotly.newPlot(")
    shot, roofline = tmp_path / "report.png", tmp_path / "roofline.png"
    out = render(page, {None: shot, "m2rnn_fwd-paper-7b-nvidia-h200-gpu-roofline": roofline})
    print(f"\n{out.drawn} of {out.figures} figures drawn, {out.svg_roots} plotly SVG roots, {out.seconds:.1f} s; "
          f"screenshots: {shot} {roofline}")
    assert out.exceptions == [] and out.console_errors == []
    assert out.external == [], "the page must open offline: plotly.js is inlined"
    assert out.figures == figures == 3 + 3 * 4 and out.drawn == figures, out.undrawn
    assert out.svg_roots >= figures
    for png in (shot, roofline):
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, png
    width, height = int.from_bytes(shot.read_bytes()[16:20], "big"), int.from_bytes(shot.read_bytes()[20:24], "big")
    assert width == 1280 and height > 5000          # the whole page, not the first screen


def test_the_check_sees_a_broken_page(chromium, page, tmp_path):
    # the same page without plotly.js: every figure's script throws and nothing is drawn
    text = page.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"/\*\*\s*\n?\s*\* plotly\.js v.*?</script>", "</script>", text, count=1, flags=re.S),
                      encoding="utf-8")
    assert len(broken.read_text(encoding="utf-8")) < len(text) / 2
    out = render(broken)
    assert out.figures == 0 or out.drawn == 0
    assert any("Plotly is not defined" in e for e in out.exceptions), out.exceptions
