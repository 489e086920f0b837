"""Demand forecasting data plane: aggregates, features, per-city LightGBM, forecasts."""
