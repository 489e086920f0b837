"""Control plane of each pipeline: thin assets, jobs, sensors and schedules (imports dagster)."""
