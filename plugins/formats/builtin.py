"""The built-in output renderers: each draws the rows ``stillroom leaderboard`` hands it in one of the layouts of
``stillroom.leaderboard`` (pivot entries or long rows, whichever shape it got)."""

from __future__ import annotations

from typing import Any

from stillroom.leaderboard import OutputRenderer, RenderOptions, render_entries, render_long


def _layout(fmt: str):
    """A ``render(rows, options)`` drawing the built-in layout ``fmt`` of either shape."""

    def render(rows: list[dict[str, Any]], options: RenderOptions) -> str:
        if options.shape == "long":
            return render_long(rows, fmt, options.console, title=options.title)
        return render_entries(rows, fmt, options.console, title=options.title, results=options.results)

    return render


RENDERERS = (
    OutputRenderer("table", "a table with intervals and verdicts", _layout("table"), destination="terminal"),
    OutputRenderer("md", "a Markdown table", _layout("md"), extension=".md"),
    OutputRenderer("csv", "CSV, values and intervals as numbers", _layout("csv"), extension=".csv"),
    OutputRenderer("json", "JSON for scripts, one object per result", _layout("json"), extension=".json", shape="long"),
    OutputRenderer("html", "the self-contained HTML report", _layout("html"), destination="file", extension=".html"),
)
