"""The data plane: standalone entry points that import no ``dagster`` (only ``dagster_pipes``)."""
