"""Recommendations data plane: ALS embeddings, DDP training, evaluation, batch top-K."""
