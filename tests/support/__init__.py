"""Helpers the tests share: real servers, simulator set-ups, runs of the project, comparisons."""
