"""The web console at `/`: the served models, a chat box each with thumbs and corrections, run reports
and the monitor, for a person with a browser rather than a client library."""
