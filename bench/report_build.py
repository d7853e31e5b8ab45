"""Fleet report build time on a built facts catalog, phase by phase.

The report is rebuilt after every facts build, so it must stay a small fraction of one. This
times `pipelines.report.build.build_report` (what the asset and `fleet report` run) on an
existing catalog: read (connect at the newest complete build, the marts' queries), render
(matplotlib charts and the HTML page), write (two atomic files). Each repeat is a fresh
connection, so DuckLake's catalog and Parquet metadata are read again as a new run would.
Figures: wall seconds per phase (min and median over the repeats), page size, peak RSS.

    .venv/bin/python bench/report_build.py --catalog sqlite:/tmp/mb/keep/365x200/catalog/facts.sqlite \\
        --data-path /tmp/mb/keep/365x200/catalog/data [--days 28,90,365] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pipelines.facts import FactsCatalog, connect
from pipelines.report.build import build_report
from pipelines.report.data import ReportOptions


def catalog_size(catalog: FactsCatalog) -> str:
    con = connect(read_only=True, catalog=catalog)
    try:
        first, last, rows, vehicles = con.execute(
            "select min(day), max(day), count(*), count(distinct vehicle_id) from fleet_daily"
        ).fetchone()
        (trips,) = con.execute("select count(*) from fct_trips").fetchone()
        (idle,) = con.execute("select count(*) from fct_idle_periods").fetchone()
    finally:
        con.close()
    return (
        f"facts {first}..{last}: {vehicles} vehicles, {rows:,} fleet_daily rows, "
        f"{trips:,} fct_trips rows, {idle:,} fct_idle_periods rows"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True, help="FLEET_FACTS_CATALOG of the facts")
    parser.add_argument("--data-path", required=True, help="FLEET_FACTS_DATA_PATH of the facts")
    parser.add_argument("--days", default="28,90,365", help="report periods to time")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    catalog = FactsCatalog.of(args.catalog, args.data_path)
    print(catalog_size(catalog))
    print(f"{'days':>5} {'phase':>7} {'min s':>7} {'median s':>9}  page")
    with tempfile.TemporaryDirectory() as tmp:
        for days in (int(d) for d in args.days.split(",")):
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                built = build_report(ReportOptions(days=days), catalog=catalog, folder=Path(tmp))
                runs.append({**built.seconds, "total": time.perf_counter() - started})
            for phase in ("read", "render", "write", "total"):
                times = [run[phase] for run in runs]
                page = f"{built.bytes / 1e6:.2f} MB" if phase == "total" else ""
                print(
                    f"{days:>5} {phase:>7} {min(times):>7.2f} "
                    f"{statistics.median(times):>9.2f}  {page}"
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
