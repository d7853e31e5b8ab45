"""`python -m pipelines.cli`: the `fleet` command."""

from pipelines.cli import main

raise SystemExit(main())
