"""fleet-pipelines: four telematics APIs into a Parquet lake and DuckDB fleet facts."""

__version__ = "0.1.0"
