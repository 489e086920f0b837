"""Demand forecasting: rides -> city-hour aggregates -> features -> LightGBM per city -> forecasts (one folder)."""
