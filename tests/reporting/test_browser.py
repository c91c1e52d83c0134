"""report.html in headless Chromium: the figures render and no script fails; the
README's picture of a report is made from one."""

import struct
import subprocess
import sys
from pathlib import Path

from ieu_potion.reporting import figures
from ieu_potion.reporting.report import Section, render
from ieu_potion.reporting.tables import current_rows, main_table
from tests.reporting.samples import FINGERPRINT, sample_confidences, sample_results, sample_trace

PLOTS = "document.querySelectorAll('.js-plotly-plot')"
# Plotly draws bars, lines and markers as `.trace` groups and a table as `.table`.
DRAWN = f"[...{PLOTS}].map(p => p.querySelectorAll('.trace, .table').length)"


def report_page(tmp_path):
    results = current_rows([sample_results()], [FINGERPRINT])
    sections = [
        Section(
            "Figures",
            [
                figures.ca_asr(results),
                figures.confidence_cdf({"badnets_white.seed_0": sample_confidences()}),
                figures.ptn_tradeoff(results, {"badnets_white.seed_0": sample_trace()}),
                figures.timing(results),
            ],
        )
    ]
    path = tmp_path / "report.html"
    path.write_text(render("digits", {}, {"Main": main_table(results)}, sections))
    return path


def test_report_renders_every_figure_offline_without_script_errors(browser, tmp_path):
    page = report_page(tmp_path)
    log = browser.open(page.as_uri(), f"{PLOTS}.length == 4 && {PLOTS}[3].querySelector('.table')")
    assert log.script_errors == []
    assert [u for u in log.requested if not u.startswith(("file:", "data:"))] == []  # offline
    assert all(count > 0 for count in browser.evaluate(DRAWN))
    readings = browser.evaluate("document.querySelectorAll('p.reading').length")
    assert readings == 4
    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_the_harness_reports_script_errors(browser, tmp_path):
    """The check above can fail: a page that throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script><p>x</p></body></html>")
    log = browser.open(page.as_uri(), "document.querySelector('p')")
    assert any("boom" in e for e in log.script_errors)


def test_the_readme_picture_is_made_from_a_report(browser, tmp_path):
    """scripts/report_png.py renders a report to a PNG of the asked size (the README's
    docs/img/report.png is made by it)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "report_png.py"
    out = tmp_path / "img" / "report.png"
    args = [str(report_page(tmp_path)), str(out), "--width", "640", "--height", "480"]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    payload = out.read_bytes()
    assert payload[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", payload[16:24]) == (640, 480)  # the IHDR chunk's size
    missing = [str(tmp_path / "absent.html"), str(out)]
    result = subprocess.run([sys.executable, str(script), *missing], capture_output=True, text=True)
    assert result.returncode == 1 and "no report at" in result.stderr
