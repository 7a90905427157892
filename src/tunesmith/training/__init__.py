"""Training methods, each a `run(cfg) -> RunResult` over the small shared pieces in this folder."""
