"""The leaderboard's built-in output formats (table, md, csv, json, html), registered as ``trylast`` defaults so a
plugin registering a format of the same name replaces it. The table, md, csv and json layouts are
``stillroom.leaderboard``'s; the html format is this plugin's report page (``report.py``), which every finished
run also writes as its ``report.html``."""

from stillroom import hookimpl


@hookimpl(trylast=True)
def stillroom_register_output_renderers(register):
    from stillroom.plugins.formats.builtin import RENDERERS

    for renderer in RENDERERS:
        register(renderer)
