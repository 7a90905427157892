"""Whole runs built from the stages: train (chained stages too), then evaluate and report; predict;
the data checks that need a model's tokenizer; the demo."""
