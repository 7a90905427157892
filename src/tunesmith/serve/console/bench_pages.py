"""The workbench's pages as HTML: data, new fine-tune, jobs, job, compare, ship. Each is a shell
rendered on the server with every value escaped; its script (a module under console/static names)
fills it by calling the public API with the visitor's own key, so a page shows nothing the key
could not fetch itself. The choices offered (base models, methods, hyperparameters and their
defaults) are read from the server's own definitions when the page is rendered."""

from __future__ import annotations

from html import escape

from tunesmith.serve.console.pages import document

# what each tunesmith method of a `supervised` job does, for the picker (the list itself is the jobs API's)
METHOD_NOTES = {"sft": "learn the assistant's replies", "pretrain": "continued pretraining: loss on every token",
                "classify": "a classification head on labelled rows", "token-classify": "a tag per token",
                "extractive-qa": "answer spans in a context", "dpo": "preference pairs: chosen over rejected"}


def method_options() -> list[tuple[str, str]]:
    """(value, label) of every method the jobs API accepts now: `type` or `type:tunesmith method`."""
    from tunesmith.jobs.settings import METHOD_TYPES, SUPERVISED_METHODS

    options = []
    for kind in METHOD_TYPES:
        if kind == "supervised":
            options += [("supervised" if m == "sft" else f"supervised:{m}",
                         f"supervised · {m}: {METHOD_NOTES.get(m, m)}") for m in SUPERVISED_METHODS]
        else:
            options.append((kind, f"{kind}: {METHOD_NOTES.get(kind, 'see docs/jobs.md')}"))
    return options


def _options(choices: list[tuple[str, str]], selected: str | None = None) -> str:
    return "".join(f'<option value="{escape(value)}"{" selected" if value == selected else ""}>{escape(label)}</option>'
                   for value, label in choices)


def _page(title: str, body: str, script: str) -> str:
    return document(title, body, scripts=(script,))


def data_page(bases: list[str]) -> str:
    body = f"""<h1>Data</h1>
<p class="note">Upload a training file to see what a fine-tune would make of it before anything trains: every bad
line, the data audit, and the first rows as the model sees them.</p>
<section class="panel">
<div id="drop-zone" class="drop-zone">
<label for="data-file">Drop a <code>.jsonl</code>, <code>.csv</code>, <code>.tsv</code>, <code>.json</code> or
<code>.parquet</code> file here, or choose one:</label>
<input id="data-file" type="file" accept=".jsonl,.json,.csv,.tsv,.parquet">
</div>
<div class="fields">
<label>Base model <select id="data-model">{_options([(b, b) for b in bases])}</select></label>
<label>Method <select id="data-method">{_options(method_options())}</select></label>
<label>Held-out file for the leakage check <select id="data-test-file"><option value="">none</option></select></label>
</div>
<p id="upload-status" class="status" role="status" aria-live="polite"></p>
</section>
<section class="panel"><h2>Your files</h2><ul id="data-files" class="file-list" data-state="loading"></ul></section>
<section id="check" class="panel" hidden>
<h2>Validation</h2><div id="validation"></div>
<h2>Audit</h2><div id="audit"></div>
<h2>Preview</h2>
<p class="note"><mark class="trained">Highlighted</mark> text is what the loss sees; the rest is context.</p>
<div id="preview"></div>
<p><a id="data-fine-tune" class="button" href="/console/jobs/new">Fine-tune on this file</a></p>
</section>"""
    return _page("data", body, "data.js")


def _hyperparameter(name: str, help_text: str, *, dpo_only: bool = False) -> str:
    hidden = ' data-method-only="dpo"' if dpo_only else ""
    return f"""<div class="field"{hidden}><label for="hp-{name}">{escape(name)}</label>
<input id="hp-{name}" name="{name}" placeholder="auto" inputmode="decimal" aria-describedby="hp-{name}-help">
<p id="hp-{name}-help" class="help">{escape(help_text)}</p></div>"""


def hyperparameter_help() -> dict[str, str]:
    """What `auto` means for each hyperparameter: tunesmith's own defaults, read from its config."""
    from tunesmith.config import PreferenceConfig, TrainConfig

    train, preference = TrainConfig.model_fields, PreferenceConfig.model_fields
    per_step = train["batch_size"].default * train["gradient_accumulation"].default
    return {
        "n_epochs": f"{train['epochs'].description} auto: {train['epochs'].default:g}.",
        "batch_size": (f"{train['batch_size'].description} auto: {train['batch_size'].default} x "
                       f"{train['gradient_accumulation'].default} accumulated = {per_step} examples per step; a number "
                       "sets the batch with no accumulation."),
        "learning_rate_multiplier": f"Times the default learning rate. {train['learning_rate'].description} auto: 1.",
        "beta": f"{preference['beta'].description} auto: {preference['beta'].default:g}.",
    }


def new_job_page(bases: list[str], training_file: str | None) -> str:
    helps = hyperparameter_help()
    fields = "".join(_hyperparameter(name, text, dpo_only=name == "beta") for name, text in helps.items())
    body = f"""<h1>New fine-tune</h1>
<form id="job-form" class="panel" data-training-file="{escape(training_file or '')}">
<div class="fields">
<label>Base model <select id="job-model" name="model" required>{_options([(b, b) for b in bases])}</select></label>
<label>Method <select id="job-method" name="method">{_options(method_options())}</select></label>
<label>Training file <select id="job-training-file" name="training_file" required></select></label>
<label>Validation file <select id="job-validation-file" name="validation_file"><option value="">none</option></select></label>
<label>Suffix <input id="job-suffix" name="suffix" maxlength="64" placeholder="in the model's name"></label>
</div>
<fieldset><legend>Hyperparameters (empty: auto)</legend><div class="hyperparameters">{fields}</div></fieldset>
<div class="field"><label for="job-settings">tunesmith settings (JSON)</label>
<textarea id="job-settings" name="tunesmith" rows="4" spellcheck="false" aria-describedby="job-settings-help">{{}}</textarea>
<p id="job-settings-help" class="help">The job's <code>tunesmith</code> field: sections <code>lora</code>,
<code>train</code>, <code>data</code>, <code>task</code>, <code>preference</code>, <code>eval</code>, e.g.
<code>{escape('{"train": {"max_steps": 100}}')}</code>. docs/jobs.md lists them.</p></div>
<div class="actions">
<button id="job-estimate" type="button">Estimate time and memory</button>
<button id="job-create" type="submit">Start the fine-tune</button>
</div>
<p id="job-form-status" class="status" role="status" aria-live="polite"></p>
<div id="estimate-result"></div>
</form>"""
    return _page("new fine-tune", body, "new_job.js")


def jobs_page() -> str:
    body = """<h1>Fine-tunes</h1>
<p><a id="jobs-new" class="button" href="/console/jobs/new">New fine-tune</a>
<a class="button secondary" href="/console/data">Check a data file</a></p>
<div class="scroll"><table id="jobs-list" class="table" data-state="loading">
<thead><tr><th scope="col">job</th><th scope="col">status</th><th scope="col">base</th><th scope="col">model</th>
<th scope="col">created</th></tr></thead><tbody></tbody></table></div>
<p id="jobs-empty" class="note" hidden>No fine-tune in this project yet.</p>"""
    return _page("fine-tunes", body, "jobs.js")


def job_page(job_id: str) -> str:
    quoted = escape(job_id)
    body = f"""<h1>Fine-tune <code id="job-id">{quoted}</code></h1>
<section class="panel job-head" id="job" data-job="{quoted}">
<dl class="facts">
<dt>status</dt><dd id="job-status" role="status" aria-live="polite">…</dd>
<dt>base</dt><dd id="job-base"></dd>
<dt>method</dt><dd id="job-method"></dd>
<dt>model</dt><dd id="job-model-name"></dd>
</dl>
<p id="job-error" class="error"></p>
<div class="actions">
<button id="job-pause" type="button">Pause</button><button id="job-resume" type="button">Resume</button>
<button id="job-cancel" type="button" class="danger">Cancel</button>
<a id="job-compare" class="button" hidden>Compare with the base</a>
<a id="job-ship" class="button" href="/console/ship?job={quoted}" hidden>Export</a>
<a id="job-report" class="button secondary" href="/console/jobs/{quoted}/report" hidden>Report</a>
</div>
</section>
<section class="panel"><h2>Loss</h2>
<div id="loss-chart" class="chart" role="img" aria-label="training and validation loss by step"></div>
<p class="legend"><span class="key train"></span> training loss <span class="key valid"></span> validation loss</p>
</section>
<div class="columns">
<section class="panel"><h2>Checkpoints</h2><ul id="checkpoints" class="plain"></ul></section>
<section class="panel"><h2>Events</h2><ol id="events" class="events"></ol></section>
</div>"""
    return _page(f"job {job_id}", body, "job.js")


def compare_page() -> str:
    body = """<h1>Compare</h1>
<form id="compare-form" class="panel">
<fieldset><legend>Models</legend><div id="compare-models" class="choices" data-state="loading"></div></fieldset>
<div class="field"><label for="compare-prompt">Prompt</label>
<textarea id="compare-prompt" rows="3" required></textarea></div>
<div class="actions"><button id="compare-send" type="submit">Ask each</button></div>
</form>
<div id="answers" class="answers"></div>
<section class="panel"><h2>Evaluations of two fine-tunes</h2>
<div class="fields"><label>First <select id="eval-a"></select></label><label>Second <select id="eval-b"></select></label></div>
<div class="scroll"><table id="eval-table" class="table"></table></div></section>"""
    return _page("compare", body, "compare.js")


def ship_page(formats: tuple[str, ...]) -> str:
    body = f"""<h1>Ship</h1>
<form id="export-form" class="panel">
<h2>Export a fine-tune</h2>
<div class="fields">
<label>Fine-tune <select id="export-job" required></select></label>
<label>Format <select id="export-format">{_options([(f, f) for f in formats])}</select></label>
<label>GGUF type <select id="export-quant">{_options([(q, q) for q in ("f16", "bf16", "f32", "q8_0")])}</select></label>
</div>
<p class="help">Each export is read back and checked before it is offered: a GGUF's answers against the run's,
a LoRA GGUF's products against the adapter's, an ONNX classifier's probabilities against the run's.</p>
<div class="actions"><button id="export-start" type="submit">Export</button></div>
<p id="export-status" class="status" role="status" aria-live="polite"></p>
<div id="export-result"></div>
</form>
<section class="panel"><h2>Exports of this fine-tune</h2><div id="exports-list"></div></section>
<section class="panel"><h2>Generations</h2>
<p class="help">A served run retrained with <code>tunesmith retrain</code> answers with its current generation;
make another promoted one current to roll back (or forward again).</p>
<div id="generations" data-state="loading"></div></section>"""
    return _page("ship", body, "ship.js")
