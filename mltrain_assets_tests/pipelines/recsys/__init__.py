"""Tests of the recommendations pipeline, mirroring mltrain_assets/pipelines/recsys."""
