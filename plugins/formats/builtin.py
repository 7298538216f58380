"""The built-in output renderers: table, md, csv and json draw the rows ``stillroom leaderboard`` hands them in one
of the layouts of ``stillroom.leaderboard`` (pivot entries or long rows, whichever shape they got); html is the
self-contained report page of ``report.py``, which every finished run also writes (``leaderboard.report_page``)."""

from __future__ import annotations

from typing import Any

from stillroom.leaderboard import OutputRenderer, RenderOptions, render_entries, render_long


def _layout(fmt: str):
    """A ``render(rows, options)`` drawing the built-in layout ``fmt`` of either shape."""

    def render(rows: list[dict[str, Any]], options: RenderOptions) -> str:
        if options.shape == "long":
            return render_long(rows, fmt, options.console, title=options.title)
        return render_entries(rows, fmt, options.console, title=options.title)

    return render


def _report(rows: list[dict[str, Any]], options: RenderOptions) -> str:
    """The HTML report of the store's long rows behind what is shown (it pivots and pairs them itself)."""
    from stillroom.plugins.formats.report import html_report

    return html_report(options.results, title=options.title)


RENDERERS = (
    OutputRenderer("table", "a table with intervals and verdicts", _layout("table"), destination="terminal"),
    OutputRenderer("md", "a Markdown table", _layout("md"), extension=".md"),
    OutputRenderer("csv", "CSV, values and intervals as numbers", _layout("csv"), extension=".csv"),
    OutputRenderer("json", "JSON for scripts, one object per result", _layout("json"), extension=".json", shape="long"),
    OutputRenderer("html", "the self-contained HTML report", _report, destination="file", extension=".html"),
)
