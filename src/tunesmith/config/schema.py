"""What the settings say about themselves, each read from the one definition: the listing
`tunesmith settings` prints, the settings a fine-tuning job may set (marked `job=True` where each
setting is defined), the JSON Schema the jobs API checks a job's `tunesmith` field against (and the
console's form reads), and the docs' settings reference."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tunesmith.config.annotations import options_of
from tunesmith.config.run import RunConfig

# what a job gives through tunesmith's own top-level keys, beside the settings sections
JOB_EXTRAS = {
    "method": {"type": "string", "description": "The tunesmith method a supervised job trains: sft, pretrain, "
                                                "classify, token-classify or extractive-qa (a dpo job trains dpo)."},
    "test_file": {"type": "string", "description": "An uploaded file (its id) evaluated after training."},
}


def _section(annotation: Any) -> type[BaseModel] | None:
    return next((o for o in options_of(annotation) if isinstance(o, type) and issubclass(o, BaseModel)), None)


def describe_settings(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf setting, in declaration order."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is not None:
            rows.extend(describe_settings(section, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((key, repr(default) if default is not None else "unset", field.description or ""))
    return rows


def job_settings(model: type[BaseModel] = RunConfig) -> dict[str, frozenset[str]]:
    """Section -> the settings a fine-tuning job may set in it (those defined with job=True)."""
    found = {}
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            allowed = frozenset(key for key, inner in section.model_fields.items()
                                if (inner.json_schema_extra or {}).get("job"))
            if allowed:
                found[name] = allowed
    return found


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of every setting of a run (defaults, ranges, help as descriptions)."""
    return RunConfig.model_json_schema()


def job_settings_schema() -> dict[str, Any]:
    """The JSON Schema of a job's `tunesmith` field: the job-settable settings of each section (their
    types, ranges, defaults and help from the full schema), `method` and `test_file`; nothing else."""
    full = settings_schema()
    definitions = full.get("$defs", {})
    properties: dict[str, Any] = dict(JOB_EXTRAS)
    for section, allowed in job_settings().items():
        reference = full["properties"][section].get("$ref") or full["properties"][section]["allOf"][0]["$ref"]
        definition = definitions[reference.rsplit("/", 1)[-1]]
        properties[section] = {"type": "object", "description": definition.get("description", ""),
                               "additionalProperties": False,
                               "properties": {key: definition["properties"][key] for key in sorted(allowed)}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "tunesmith settings of a job",
            "type": "object", "additionalProperties": False, "properties": properties, "$defs": definitions}


def settings_reference() -> str:
    """The docs' settings reference, as Markdown: one table per section."""
    lines = ["# Settings reference", "",
             "Every setting of a run, generated from the code's own definitions (`tunesmith settings` prints the "
             "same). Write them in a YAML config (`train:` then `  batch_size: 8`) or on the command line "
             "(`--set train.batch_size=8`). **Job** marks what a fine-tuning job's `tunesmith` field may set.", ""]
    jobs = job_settings()
    current = None
    for key, default, help_text in describe_settings():
        section = key.split(".")[0]
        if section != current:
            current = section
            lines += ["", f"## {section}", "", "| setting | default | job | what it does |", "|---|---|---|---|"]
        name = key.split(".", 1)[-1]
        job = "yes" if name in jobs.get(section, ()) else ""
        text = help_text.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {job} | {text} |")
    return "\n".join(lines) + "\n"
