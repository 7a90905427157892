"""A chained run (`stages:` in the config): each stage a run of its own under <run>/stages/,
starting from the previous stage's model; <run>/lineage.json records each as it finishes."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import RunConfig, dump_config, replace, stage_config, stage_name
from tunesmith.errors import RunError
from tunesmith.files import write_atomic
from tunesmith.pipeline.evaluate import evaluate_after_training
from tunesmith.pipeline.folder import result_from_manifest
from tunesmith.training.run_folder import (
    RunFolder,
    check_replaceable,
    check_same_config,
    make_run_folder,
    remove_run_folder,
    run_name,
)
from tunesmith.training.session import RunResult, run_method, say
from tunesmith.training.tracking import report_results


def train_stages(config: RunConfig, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Each stage a run of its own under <run>/stages/, starting from the previous stage's model.

    A finished stage (its manifest written) is not run again on --resume; the first unfinished one
    continues from its last checkpoint, or starts. lineage.json records every stage as it finishes.
    """
    root = Path(config.output.dir) / run_name(config)
    lineage_path = root / "lineage.json"
    if resume and not lineage_path.exists():
        raise RunError(f"{root}: no chained run to resume; run without --resume to start it")
    if not resume:
        check_replaceable(root, config.output.overwrite)

    def start_chain() -> None:
        """Replace an earlier chain (only now that the first stage's data and model have loaded)."""
        if root.exists() and not resume:
            remove_run_folder(root)
        if not root.exists():
            make_run_folder(root)
        if not lineage_path.exists():
            write_atomic(root / "config.yaml", dump_config(config))
            _write_lineage(root, config, [])

    if resume:
        check_same_config(RunFolder(root), config)
    model, stages, result = config.model.name, [], None
    for number in range(len(config.stages)):
        name = stage_name(config, number)
        stage = replace(stage_config(config, number, model=model),
                        output=replace(config.output, dir=str(root / "stages"), name=name, overwrite=False, save_merged=True))
        folder = root / "stages" / name
        finished = (folder / "manifest.json").is_file()
        if finished and resume:
            say(f"stage {name}: finished earlier")
            if not (folder / "report.md").is_file():  # killed after training, before its evaluation
                evaluate_after_training(result_from_manifest(folder), stage)
                report_results(stage.output.report_to, folder, stage.output.dir)
            result_model = json.loads((folder / "manifest.json").read_text())["outputs"]["model"]
        else:
            stage_resume = resume and (folder / "checkpoints").is_dir()
            say(f"stage {name} ({stage.train.method}) from {model}")
            # A stage killed before its first checkpoint starts over: its folder is replaced once the
            # stage's data and model have loaded (a tunesmith run folder; anything else is refused).
            stage = replace(stage, output=replace(stage.output, overwrite=True)) if not stage_resume else stage
            result = run_method(stage, resume=stage_resume, show_progress=show_progress,
                                before_start=start_chain if number == 0 else None)
            evaluate_after_training(result, stage)
            report_results(stage.output.report_to, result.run_dir, stage.output.dir)
            result_model = result.outputs["model"]
        stages.append(_stage_record(number, name, folder, model, result_model))
        _write_lineage(root, config, stages)
        model = result_model
    if result is None:  # every stage had finished before
        result = result_from_manifest(root / "stages" / stages[-1]["name"])
    return result


def _stage_record(number: int, name: str, folder: Path, started_from: str, model: str) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"stage": number + 1, "name": name, "method": manifest["method"], "started_from": started_from,
            "data": [{"path": f["path"], "sha256": f["sha256"], "rows": f["rows"]} for f in manifest["data"]["files"]],
            "run_folder": str(folder), "model": model, "results": manifest["results"], "finished": manifest["finished"]}


def _write_lineage(root: Path, config: RunConfig, stages: list[dict]) -> None:
    lineage = {"base_model": config.model.name, "stages_planned": [stage_name(config, n) for n in range(len(config.stages))],
               "stages": stages, "final_model": stages[-1]["model"] if len(stages) == len(config.stages) else None}
    write_atomic(root / "lineage.json", json.dumps(lineage, indent=1))

