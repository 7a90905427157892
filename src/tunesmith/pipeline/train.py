"""`tunesmith train` and `tunesmith.train`: audit the data, train (every stage of a chained run),
then evaluate as the method and config ask, and report.

The CLI and the Python API call these; the stages themselves never call each other upward.
"""

from __future__ import annotations

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Problem
from tunesmith.errors import DataError
from tunesmith.models.processes import ALONE, Share
from tunesmith.pipeline.evaluate import evaluate_after_training, shares_decoding
from tunesmith.pipeline.stages import train_stages
from tunesmith.training.distributed.world import World, environment_world
from tunesmith.training.session import RunResult, check_distributed, run_method, say
from tunesmith.training.tracking import report_results


def train(config: RunConfig, *, resume: bool = False, show_progress: bool = True, show_results: bool = True) -> RunResult:
    """Train (every stage, when the config has `stages`); then evaluate as the method and config
    ask, and write the report. `show_results=False`: the comparison's table is not printed (the
    demo prints it last, after the time of each stage)."""
    world = environment_world()
    check_distributed(config, world, resume)
    if config.stages:
        return train_stages(config, resume=resume, show_progress=show_progress)
    if world.is_main:
        audit_before_training(config)
    result = run_method(config, resume=resume, show_progress=show_progress)
    share = evaluation_share(result, world) if shares_decoding(result.method, config.eval) else ALONE
    if not world.is_main:  # its share of the held-out decoding; rank 0 writes the report
        if share.size > 1:
            evaluate_after_training(result, config, share)
        return result
    evaluate_after_training(result, config, share, show=show_results)
    report_results(config.output.report_to, result.run_dir, config.output.dir)
    return result


def evaluation_share(result: RunResult, world: World) -> Share:
    """The processes that evaluate the run together: all of them once rank 0 has written the run's
    model, when every one can read it (one machine, or a file system the machines share); else
    rank 0 alone."""
    if world.size == 1:
        return ALONE
    world.barrier()  # rank 0 has written the model and the manifest
    readable = world.gather((result.run_dir / "manifest.json").is_file())
    return Share(world.rank, world.size) if all(readable) else ALONE


def audit_before_training(config: RunConfig) -> None:
    """data.audit: the audit's summary before any model loads; with `strict`, a DataError on any finding."""
    if config.data.audit == "off" or not config.data.train:
        return
    if config.train.method in ("token-classify", "extractive-qa"):
        say(f"data audit: not run for {config.train.method} rows (the audit reads rows of text, labels and chats); "
            "the entity and answer checks run as the data loads")
        return
    from tunesmith.data.audit import run_audit

    train = resolve_data_path(config.data.train)
    held_out = [path for path in (resolve_data_path(s) for s in (config.data.validation, config.eval.test) if s)
                if path.exists()]
    if not train.exists():  # the run's own checks name it, after the model (same order as without the audit)
        return
    report = run_audit(train, config.data, held_out)
    for line in report.summary_lines(examples=2):
        say(line)
    if config.data.audit == "strict" and not report.clean:
        raise DataError(f"{config.data.train}: the data audit found problems and data.audit=strict; fix them (tunesmith "
                        "data audit --dedupe/--scrub -o writes a cleaned copy) or set data.audit=warn:",
                        [Problem(f.where, f.what, f.fix) for f in report.findings]
                        + [Problem(g.rows[0], f"duplicated at {', '.join(g.rows[1:])}", "--dedupe") for g in report.duplicates]
                        + [Problem(leak.held_out, f"also in the training data at {leak.train} ({leak.kind})",
                                   "remove it from one of the two files") for leak in report.leaks]
                        + [Problem(where, f"holds {kind}", "--scrub") for kind, wheres in report.pii.items() for where in wheres])

