"""The one console every `fleet` command prints to."""

from rich.console import Console

console = Console()
