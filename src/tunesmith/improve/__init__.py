"""The loop after deployment: monitor a served run, export its users' feedback as training rows,
retrain with a gate that promotes only what wins, and the lineage of generations that records it."""
