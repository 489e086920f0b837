"""Cross-pipeline reporting: the model quality report over every registered pipeline (not a pipeline itself)."""
