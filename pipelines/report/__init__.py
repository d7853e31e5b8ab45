"""The fleet report: the marts as one offline HTML page people read (docs/report.md).

`data` reads the marts, `charts` draws, `render` writes the page, `build` puts it in
FLEET_REPORT_DIR; `assets` is the Dagster asset, `cli` the `fleet report` command.
"""
