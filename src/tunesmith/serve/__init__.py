"""Serving: an OpenAI-compatible HTTP server for run folders (serve/app.py), many adapters on one base
(serve/models.py), decoded together in batches (serve/engine.py). Needs the `serve` extra."""
