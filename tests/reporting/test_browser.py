"""report.html in headless Chromium: the figures render and no script fails."""

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
