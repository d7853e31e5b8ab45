"""docs/analytics.md never lies: rebuild its reference world through the real pipeline, re-run
every question and compare with the committed file.

The world is landed from the four simulated APIs by real Dagster materializations and built by
dbt (`build_reference_facts`: the steps of `fleet demo` on fixed dates), so a model change that moves
a number fails this test until the doc is regenerated.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines import analytics, facts
from pipelines.facts import FactsCatalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> FactsCatalog:
    """The reference world's facts catalog, built once for the module."""
    return analytics.build_reference_facts(tmp_path_factory.mktemp("analytics-reference"))


@pytest.fixture(scope="module")
def marts(reference: FactsCatalog) -> Iterator[duckdb.DuckDBPyConnection]:
    con = analytics.connect(reference)
    yield con
    con.close()


@pytest.fixture(scope="module")
def marts_only(reference: FactsCatalog) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory database holding nothing but the marts' (empty) tables, in `main`: the
    catalog, with its staging models, is detached once they are copied."""
    con = facts.connect(read_only=True, catalog=reference)
    con.execute("use memory.main")
    for table in sorted(analytics.MART_TABLES):
        con.execute(
            f"create table memory.main.{table} as select * from {facts.ALIAS}.main.{table} limit 0"
        )
    con.execute(f"detach {facts.ALIAS}")
    databases = con.execute("select database_name from duckdb_databases()").fetchall()
    assert {name for (name,) in databases} == {"memory", "system", "temp"}
    yield con
    con.close()


@pytest.mark.parametrize("question", analytics.QUESTIONS, ids=lambda q: q.title[:40])
def test_every_question_reads_only_the_marts(
    marts_only: duckdb.DuckDBPyConnection, question: analytics.Question
) -> None:
    marts_only.sql(question.sql).fetchall()  # a staging view or another schema would not bind


def test_every_question_returns_rows(marts: duckdb.DuckDBPyConnection) -> None:
    empty = [q.title for q in analytics.QUESTIONS if not analytics.run(marts, q)[1]]
    assert not empty, f"questions with no rows on the reference world: {empty}"


def test_committed_doc_matches_what_the_sql_returns(marts: duckdb.DuckDBPyConnection) -> None:
    rendered = analytics.render(marts, analytics.REFERENCE_NOTE)
    committed = DOC.read_text() if DOC.exists() else ""
    if rendered != committed:
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            "docs/analytics.md (committed)",
            "docs/analytics.md (what the SQL returns now)",
        )
        pytest.fail(
            "docs/analytics.md is out of date with the marts or with pipelines/analytics.py.\n"
            f"Regenerate it from the repository root, then review and commit the change:\n"
            f"    {analytics.REGENERATE}\n\n" + "".join(list(diff)[:60]),
            pytrace=False,
        )


def test_an_analysis_may_ref_only_a_mart() -> None:
    with pytest.raises(ValueError, match=r"ref\('stg_avl__trips'\)"):
        analytics.mart_ref("stg_avl__trips")
