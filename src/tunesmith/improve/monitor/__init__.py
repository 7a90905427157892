"""Traffic and drift figures from the store of served completions: how much a served model is
asked, how fast and how well it answers, and whether what it is asked has moved away from what it
was trained on far enough to retrain (`tunesmith monitor RUN`)."""

from tunesmith.improve.monitor.drift import DriftFigure, DriftThresholds
from tunesmith.improve.monitor.page import render_html
from tunesmith.improve.monitor.report import Drift, ModelReport, MonitorReport, build_monitor
from tunesmith.improve.monitor.traffic import Traffic
from tunesmith.improve.monitor.write import write_monitor

__all__ = ["Drift", "DriftFigure", "DriftThresholds", "ModelReport", "MonitorReport", "Traffic", "build_monitor",
           "render_html", "write_monitor"]
