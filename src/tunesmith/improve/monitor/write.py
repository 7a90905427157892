"""`tunesmith monitor RUN`: find the models a run answered as in its store, build their report,
and write it as monitor.html and monitor.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import func, select

from tunesmith.errors import RunError
from tunesmith.files import write_atomic
from tunesmith.improve.monitor.page import render_html
from tunesmith.improve.monitor.report import MonitorReport, build_monitor
from tunesmith.store.completions import Completions, choose_project, run_store_url
from tunesmith.store.db import Store, open_store
from tunesmith.store.tables import CompletionRow


def write_monitor(run_dir: Path, store_url: str | None = None, out_dir: Path | None = None, *,
                  since_hours: float | None = None, project: str | None = None) -> tuple[Path, Path, MonitorReport]:
    """`tunesmith monitor RUN`: the report of every model the store says RUN (or one of its
    generations) answered as in `project`, written to out_dir (default RUN/monitor/) as
    monitor.html and monitor.json. Without `project`, the one project the store holds RUN's
    completions in; several are an error (store.completions.choose_project)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder; give the folder `tunesmith train` wrote")
    url = run_store_url(run_dir, store_url)
    store = open_store(url)
    try:
        project, runs = runs_in_store(store, run_folders(run_dir), url, run_dir, project)
        since = int(time.time() - since_hours * 3600) if since_hours is not None else None
        report = build_monitor(Completions(store), runs, since=since, project=project)
    finally:
        store.close()
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "monitor"
    json_path = write_atomic(out_dir / "monitor.json", json.dumps(report.to_json(), indent=1, allow_nan=False))
    html_path = write_atomic(out_dir / "monitor.html", render_html(report))
    return html_path, json_path, report


def run_folders(run_dir: Path) -> set[Path]:
    """The run and its generations (generations.json, written by tunesmith retrain). The server
    records the run's own folder for every generation it serves; older rows may name a generation's."""
    from tunesmith.improve.lineage import generations, has_lineage

    folders = {run_dir.resolve()}
    if has_lineage(run_dir):
        folders |= {generation.run_folder for generation in generations(run_dir)}
    return folders


def runs_in_store(store: Store, folders: set[Path], url: str, run_dir: Path,
                  project: str | None = None) -> tuple[str, dict[str, Path]]:
    """The project read, and served name -> run folder for every name whose stored rows in it say
    one of `folders` answered (a name several of them answered as: the folder of its latest row,
    the one drift compares with)."""
    query = (select(CompletionRow.model, CompletionRow.run_dir, CompletionRow.project, func.max(CompletionRow.seq))
             .group_by(CompletionRow.model, CompletionRow.run_dir, CompletionRow.project))
    with store.reading() as session:
        served = session.execute(query).all()
    ours = [(model, Path(folder).resolve(), owner, seq) for model, folder, owner, seq in served
            if folder and Path(folder).resolve() in folders]
    if not ours:
        names = ", ".join(sorted({model for model, _, _, _ in served})) or "nothing yet"
        raise RunError(f"{url}: no stored completion was answered by {run_dir} (the store holds: {names}); serve it "
                       f"with `tunesmith serve {run_dir} --store` and send it requests, or give another --store-url")
    project = choose_project(sorted({owner for _, _, owner, _ in ours}), project, f"the run {run_dir}")
    latest: dict[str, tuple[int, Path]] = {}
    for model, folder, owner, seq in ours:
        if owner == project and (model not in latest or seq > latest[model][0]):
            latest[model] = (seq, folder)
    return project, {model: folder for model, (_, folder) in sorted(latest.items())}
