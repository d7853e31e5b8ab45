"""Metrotec: vehicles, route log, stops, refuels and fuel level history, per vehicle and period."""
