"""The dbt project's `vars:`, for Python code that must judge the data the way the models do.

Read from dbt_models/dbt_project.yml rather than copied into a constant, so a threshold changed
for the models changes for the raw checks too. Kept apart from pipelines/dbt.py (which imports
the checks) so the checks can read them without importing dbt's assets back.
"""

from functools import cache
from pathlib import Path
from typing import Any

import yaml

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_models"
"""The dbt project, beside the package (pipelines/dbt.py builds its assets from it)."""
PROJECT_FILE = DBT_PROJECT_DIR / "dbt_project.yml"


@cache
def dbt_vars() -> dict[str, Any]:
    """Every var the project declares, as dbt reads them without `--vars` overrides."""
    project = yaml.safe_load(PROJECT_FILE.read_text())
    return dict(project.get("vars") or {})


def dbt_var(name: str) -> Any:
    """One declared var; a missing one names the file to add it to."""
    try:
        return dbt_vars()[name]
    except KeyError:
        raise KeyError(f"dbt var {name!r} is not declared in {PROJECT_FILE}") from None
