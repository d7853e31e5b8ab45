"""Worked SQL questions on the facts' marts, rendered with their outputs into docs/analytics.md.

Each question is a dbt analysis (dbt_models/analyses/: one .sql reading the marts through `ref`,
so dbt knows its lineage; title and why in `_analyses.yml`). The doc is generated, never
edited by hand, so its tables cannot drift from what the SQL returns:
`tests/dbt/test_analytics_doc.py` rebuilds the reference world through the real pipeline and
compares. Regenerate with `python -m pipelines.analytics --reference --write docs/analytics.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import jinja2.runtime
import yaml

from pipelines import facts
from pipelines.dbt_vars import DBT_PROJECT_DIR
from pipelines.facts import FactsCatalog, FactsError

# The only tables the questions may read: the marts of docs/facts.md, in the `main` schema.
MART_TABLES = frozenset(
    {"fct_trips", "fct_fuel_events", "fct_idle_periods", "dim_vehicles", "fleet_daily"}
)
# A safety net for the doc's length; the queries carry their own LIMITs where lists run long.
MAX_ROWS = 15

# The reference world: the demo's fleet (seed 7, 12 vehicles, so the shipped seeds map every
# identity) over one fixed week, seen from a fixed "now" after its last trip has ended.
REFERENCE_SEED = 7
REFERENCE_VEHICLES = 12
REFERENCE_END = date(2026, 3, 31)
REFERENCE_DAYS = 7
REFERENCE_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
REGENERATE = ".venv/bin/python -m pipelines.analytics --reference --write docs/analytics.md"

ANALYSES_DIR = DBT_PROJECT_DIR / "analyses"
# The macros the analyses call (the shared `names` CTE), pasted in so each query stands alone.
ANALYSIS_MACROS = DBT_PROJECT_DIR / "macros" / "vehicle_names.sql"


@dataclass(frozen=True)
class Question:
    """One worked question: what is asked, why a fleet engineer asks it, and the SQL."""

    title: str
    why: str
    sql: str


def mart_ref(name: str) -> str:
    """dbt's `ref` as the doc shows it: the mart's bare table name (`fleet sql` and the doc's
    `USE facts` resolve it in `main`). Refusing every other model keeps the questions on the
    marts' documented columns, never on staging that may change."""
    if name not in MART_TABLES:
        marts = ", ".join(sorted(MART_TABLES))
        raise ValueError(f"ref('{name}'): the analyses read only the marts ({marts})")
    return name


def load_questions(analyses: Path = ANALYSES_DIR) -> tuple[Question, ...]:
    """The dbt analyses in the order their YAML lists them, each rendered as dbt compiles it
    but with `ref` naming the marts as a reader types them; the YAML gives title and why."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["ref"] = mart_ref
    macros = vars(env.from_string(ANALYSIS_MACROS.read_text()).module)
    env.globals.update({k: v for k, v in macros.items() if isinstance(v, jinja2.runtime.Macro)})
    listed = yaml.safe_load((analyses / "_analyses.yml").read_text())["analyses"]
    files = {path.stem for path in analyses.glob("*.sql")}
    if unlisted := files - {entry["name"] for entry in listed}:
        raise ValueError(f"analyses without an entry in _analyses.yml: {sorted(unlisted)}")
    return tuple(
        Question(
            title=entry["config"]["meta"]["title"],
            why=entry["description"],
            sql=env.from_string((analyses / f"{entry['name']}.sql").read_text()).render().strip(),
        )
        for entry in listed
    )


QUESTIONS = load_questions()


# --- running and rendering ---------------------------------------------------------------------


def connect(catalog: FactsCatalog) -> duckdb.DuckDBPyConnection:
    """The facts as of their last complete build, as `fleet sql` opens them, in UTC (set by
    `facts.connect`) and on one thread: float sums then add in one order, so every render of
    one build is byte-identical. Raises FactsError (one line) when the catalog cannot open."""
    return facts.connect(read_only=True, catalog=catalog, threads=1)


def run(con: duckdb.DuckDBPyConnection, question: Question) -> tuple[list[str], list[tuple]]:
    """The question's column names and every row it returns."""
    relation = con.sql(question.sql)
    return list(relation.columns), relation.fetchall()


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC) if value.tzinfo else value
        return stamp.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float | Decimal):
        # The SQL rounds; this only trims float noise (1.2000000000000002) from what it returns.
        return repr(round(float(value), 4))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def markdown_table(columns: Sequence[str], rows: Sequence[tuple]) -> str:
    """A GitHub table; numeric columns right-aligned, at most MAX_ROWS rows (and says so)."""
    shown = rows[:MAX_ROWS]
    numeric = [
        all(_is_number(row[i]) for row in shown if row[i] is not None)
        and any(row[i] is not None for row in shown)
        for i in range(len(columns))
    ]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in shown),
    ]
    if len(rows) > len(shown):
        lines.append(f"\n_First {len(shown)} of {len(rows)} rows._")
    return "\n".join(lines)


def _anchor(number: int, question: Question) -> str:
    """The id GitHub gives the question's heading, so the contents list links to it."""
    heading = f"{number}. {question.title}".lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def render(con: duckdb.DuckDBPyConnection, data_note: str) -> str:
    """The whole doc: an introduction, then each question with its why, SQL and output."""
    first, last, vehicles = con.execute(
        "select min(day), max(day), count(distinct vehicle_id) from fleet_daily"
    ).fetchone() or (None, None, 0)
    parts = [
        "# Analytics: ten questions for the fleet marts",
        "",
        "<!-- Generated by pipelines/analytics.py; do not edit by hand. "
        "tests/dbt/test_analytics_doc.py fails when this file and the SQL disagree. "
        f"Regenerate: {REGENERATE} -->",
        "",
        "Worked SQL a fleet data engineer runs on the marts (docs/facts.md), each with why it is "
        "asked and what it returned. Every query reads only the mart tables in `main` "
        "(`fct_trips`, `fct_fuel_events`, `fct_idle_periods`, `dim_vehicles`, `fleet_daily`); "
        'run one with `fleet sql "..."`, or in any DuckDB client after `ATTACH '
        "'ducklake:$FLEET_FACTS_CATALOG' AS facts (DATA_PATH '$FLEET_FACTS_DATA_PATH', "
        "READ_ONLY); USE facts;`.",
        "",
        f"{data_note} They cover {first}..{last} and {vehicles} vehicles. Timestamps are "
        "UTC, distances km, fuel litres.",
        "",
        "Two habits run through them. `fct_trips` holds one row per trip *per source*: a trip "
        "several sources reported is counted once, through the copy whose `is_duplicate_of` "
        "is NULL (`fleet_daily` already counts that way). And ratios are ratios of totals "
        "(sum, then divide), never averages of per-day ratios.",
        "",
    ]
    parts += [f"{i}. [{q.title}](#{_anchor(i, q)})" for i, q in enumerate(QUESTIONS, 1)]
    for i, question in enumerate(QUESTIONS, 1):
        columns, rows = run(con, question)
        parts += [
            "",
            f"## {i}. {question.title}",
            "",
            question.why,
            "",
            "```sql",
            question.sql,
            "```",
            "",
            markdown_table(columns, rows),
        ]
    return "\n".join(parts) + "\n"


REFERENCE_NOTE = (
    "The outputs come from the reference world: the demo's simulated fleet (seed "
    f"{REFERENCE_SEED}, {REFERENCE_VEHICLES} vehicles) landed from the four simulated vendor APIs "
    "by the real Dagster assets and built by dbt, as `fleet demo` does but on fixed dates."
)


# --- the reference world -----------------------------------------------------------------------

_PIPELINE_PREFIXES = ("AVL_", "AUTOPI_", "KT1_", "METROTEC_", "FLEET_")


@contextlib.contextmanager
def _hermetic(data_dir: Path, values: dict[str, str]) -> Iterator[None]:
    """Only `values` configure the pipeline: no shell variable or `.env` may change the world."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(_PIPELINE_PREFIXES)]:
        del os.environ[key]
    os.environ.update(values)
    try:
        with contextlib.chdir(data_dir):  # a developer's .env lives in the working directory
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_reference_facts(data_dir: Path) -> FactsCatalog:
    """Land the reference world from the four simulated APIs, build the marts into a catalog
    under `data_dir`; return that catalog.

    The steps of `fleet demo` (its selections, quiet runs and scaled limits) on fixed dates, a
    fixed simulated clock and an ephemeral Dagster instance, so every build gives the same marts.
    """
    from dagster import AssetSelection

    from pipelines.cli.demo import demo_steps
    from pipelines.runner import failure_lines, run_quietly
    from pipelines.simulator.serve import start_all
    from pipelines.simulator.world import World

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    world = World(
        seed=REFERENCE_SEED, vehicles=REFERENCE_VEHICLES, end_day=REFERENCE_END, days=REFERENCE_DAYS
    )
    # The models only: their data tests are the dbt test suite's job, and skipping them halves
    # the build (the Dagster asset checks stay unselected, so dbt runs no tests).
    steps = demo_steps(
        world.start_day,
        world.end_day,
        dbt_selection=AssetSelection.from_string("kind:dbt").without_checks(),
    )
    steps = [step for step in steps if step.name != "report"]  # the facts are what it needs
    catalog = FactsCatalog.of(
        f"sqlite:{data_dir / 'fleet_catalog.sqlite'}", str(data_dir / "facts")
    )
    # A short long-poll so the kt1 drain ends promptly once the queue is empty, as in the demo.
    with start_all(world, clock=lambda: REFERENCE_NOW, kt1_long_poll_s=1.0) as sims:
        env = {
            **sims.env(),
            "FLEET_LAKE_DIR": str(data_dir / "lake"),
            "FLEET_FACTS_CATALOG": catalog.catalog,
            "FLEET_FACTS_DATA_PATH": catalog.data_path,
            "FLEET_STATE_URL": f"sqlite:///{data_dir / 'state.sqlite3'}",
            "FLEET_START_DATE": world.start_day.isoformat(),
            "METROTEC_RATE_LIMIT": "20/1",
            "KT1_DRAIN_SECONDS": "60",
        }
        with _hermetic(data_dir, env):
            from pipelines.definitions import build_defs

            defs = build_defs()
            for step in steps:
                log = data_dir / "logs" / f"{step.name}.log"
                result = run_quietly(defs, step.selection, step.tags, None, log)
                if not result.success:
                    raise RuntimeError(
                        f"reference world: step {step.name} failed (log: {log}): "
                        + "; ".join(failure_lines(result))
                    )
    return catalog


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.analytics",
        description="Render docs/analytics.md: the worked questions with their outputs.",
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--facts",
        action="store_true",
        help="render from the facts of FLEET_FACTS_CATALOG (data in FLEET_FACTS_DATA_PATH), as "
        "of their last complete build",
    )
    data.add_argument(
        "--reference",
        action="store_true",
        help="build the reference world first (about a minute); what the committed doc uses",
    )
    parser.add_argument("--write", type=Path, metavar="FILE", help="write here, not to stdout")
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="with --reference: build (and keep) the world here, logs included; default: a "
        "temporary directory",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fleet-analytics-") as tmp:
        if args.reference:
            catalog = build_reference_facts(args.data_dir or Path(tmp))
            note = REFERENCE_NOTE
        else:
            from pipelines.settings import get_settings, load_env_file

            load_env_file()
            settings = get_settings()
            for warning in settings.retired_warnings():
                print(warning, file=sys.stderr)
            catalog = FactsCatalog.from_settings(settings)
            note = f"The outputs come from the facts catalog `{catalog.describe()}`."
        try:
            con = connect(catalog)
        except FactsError as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            doc = render(con, note)
        finally:
            con.close()
    if args.write:
        args.write.write_text(doc)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
