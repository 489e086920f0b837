"""Distributed training of the recommender: launcher (torchrun), worker, checkpoints, tracking."""
