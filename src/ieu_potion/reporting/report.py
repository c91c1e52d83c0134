"""One self-contained HTML report: tables, figures with their readings, configuration.

The page carries its own copy of plotly.js (no CDN, no web fonts), so it opens offline and
can be mailed as one file.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.io as pio
import yaml

from ieu_potion.reporting.figures import reading

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.reading { background: #f6f8fa; border-left: 4px solid #1f77b4; padding: 0.6em 1em; }
table.data { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
table.data th { background: #f0f0f0; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""
FOLDED_ROWS = 30  # longer tables start folded


@dataclass(frozen=True)
class Section:
    title: str
    figures: list  # plotly figures, shown in order with their readings


def seeds(parameters: Any, path: str = "") -> list[str]:
    """``path: value`` for every ``seed`` in the (nested) parameters."""
    found = []
    if isinstance(parameters, dict):
        for key, value in parameters.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "seed" and not isinstance(value, dict):
                found.append(f"{where}: {value}")
            else:
                found += seeds(value, where)
    return found


def table_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>Nothing in this run.</p>"
    rendered = table.to_html(
        index=False, classes="data", float_format=lambda v: f"{v:.3f}", na_rep=""
    )
    if len(table) > FOLDED_ROWS:
        return f"<details><summary>{len(table)} rows</summary>{rendered}</details>"
    return rendered


def figure_html(figure, div_id: str) -> str:
    plot = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    text = reading(figure)
    return plot + (f'<p class="reading">{html.escape(text)}</p>' if text else "")


def anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())


def render(
    dataset: str,
    parameters: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    sections: list[Section],
) -> str:
    """The report page for one run."""
    body = []
    count = 0
    for title, table in tables.items():
        body.append(f'<h2 id="{anchor(title)}">{html.escape(title)}</h2>{table_html(table)}')
    for section in sections:
        body.append(f'<h2 id="{anchor(section.title)}">{html.escape(section.title)}</h2>')
        for figure in section.figures:
            count += 1
            body.append(figure_html(figure, f"figure-{count}"))
    titles = list(tables) + [s.title for s in sections] + ["Configuration"]
    nav = " ".join(f'<a href="#{anchor(t)}">{html.escape(t)}</a>' for t in titles)
    seed_list = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in seeds(parameters))
    config = html.escape(yaml.safe_dump(parameters, sort_keys=False, default_flow_style=None))
    from plotly.offline import get_plotlyjs  # imported here: it loads IPython where present

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ieu-potion report: {html.escape(dataset)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>ieu-potion report: {html.escape(dataset)}</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")} from this run's artifacts; {count} figures.</p>
<nav>{nav}</nav>
{"".join(body)}
<h2 id="configuration">Configuration</h2>
<p>Seeds:</p><ul>{seed_list}</ul>
<pre>{config}</pre>
</body>
</html>
"""
