"""Baselines, forecasts and the one scorer every model is judged by."""
