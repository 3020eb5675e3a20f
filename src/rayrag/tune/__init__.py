"""`rayrag tune`: hyperparameter search with Ray Tune, every trial served by one retrieval service."""
