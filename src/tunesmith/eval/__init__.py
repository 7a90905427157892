"""Generation, metrics, baselines and comparison reports."""
