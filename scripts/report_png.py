"""A PNG of the top of a run's report (its title, tables and first figures), for the
README: the self-contained HTML page rendered by headless Chromium, its scripts (Plotly)
given time to draw, nothing fetched from the network.

    .venv/bin/python scripts/report_png.py data/08_reporting/report.html docs/img/report.png

Needs Chromium (Debian: apt-get install chromium) on the PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# A headless browser that renders a local page and asks nothing of the network (the tests'
# browser driver, tests/browser.py, starts Chromium with these too).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium_path() -> str | None:
    """The first of ``BROWSERS`` on the PATH, or None."""
    return next((found for b in BROWSERS if (found := shutil.which(b))), None)


def render(report: Path, out: Path, width: int, height: int) -> None:
    """Write ``report`` as seen in a ``width`` x ``height`` window to ``out`` (a PNG)."""
    browser = chromium_path()
    if browser is None:
        raise SystemExit(f"no Chromium on the PATH (looked for {', '.join(BROWSERS)})")
    if not report.is_file():
        raise SystemExit(f"no report at {str(report)!r}: run `kedro run` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        shot = Path(scratch) / "shot.png"
        command = [
            browser,
            *FLAGS,
            "--hide-scrollbars",
            f"--user-data-dir={scratch}/profile",
            f"--window-size={width},{height}",
            "--virtual-time-budget=15000",  # virtual ms for Plotly to draw every figure
            f"--screenshot={shot}",
            report.resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not shot.is_file():
            raise SystemExit(f"Chromium failed ({result.returncode}): {result.stderr[-2000:]}")
        payload = shot.read_bytes()
        if not payload.startswith(PNG_SIGNATURE):
            raise SystemExit("Chromium wrote something other than a PNG")
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(payload)
        tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)
    render(args.report, args.out, args.width, args.height)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
