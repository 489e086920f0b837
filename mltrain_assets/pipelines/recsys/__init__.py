"""Recommendations: interactions -> ALS embeddings -> DDP ranker -> champion/challenger -> top-K (one folder)."""
