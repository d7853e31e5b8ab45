"""The fleet report: the marts as one offline HTML page people read (docs/report.md).

`queries` reads the marts into `data`'s values; `kpis` and `text` say how figures read;
`charts` draws, `render` writes the HTML page, `markdown` the asset's Dagster metadata; `build`
puts the page in FLEET_REPORT_DIR; `assets` is the Dagster asset, `cli` the `fleet report` command.
"""
