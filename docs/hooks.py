"""MkDocs hooks (mkdocs.yml `hooks:`): the reference pages, written at build time from the code
itself so that they cannot drift from it, and benchmarks/README.md as a page of the site.

The pages exist only in the built site, never in the repository. Each is made by a plain function
of no arguments (no MkDocs import), so tests/unit/test_docs.py can build them and knows which
pages a link may name that are not files in docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HELP_WIDTH = 100  # the column argparse wraps --help at, whatever terminal builds the site
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
          ("minItems", "items >="), ("maxItems", "items <="), ("maxLength", "length <="))


# -- settings ---------------------------------------------------------------------------------------


def settings_page() -> str:
    """Every setting of a run (what `tunesmith settings` prints), then the server's and workers'."""
    from tunesmith.config import JobsConfig, ServeConfig, describe_settings, settings_reference

    flags = _option_flags(("serve", "worker"))
    lines = [_escape_html(settings_reference().rstrip()), "", "## The server and its workers", "",
             "What `tunesmith serve` and `tunesmith worker` run with. The flag beside a setting sets it "
             "(see the [command reference](cli.md)); keys and their projects come from the key files "
             "(`--api-key-file`, `--admin-key-file`) and the environment; any other setting without a flag "
             "keeps the default shown.", ""]
    for title, section in (("serve", ServeConfig), ("jobs", JobsConfig)):
        lines += [f"### {title}", "", "| setting | default | flag | what it does |", "|---|---|---|---|"]
        for key, default, help_text in describe_settings(section):
            flag = f"`{flags[key]}`" if key in flags else ""
            lines.append(f"| `{key}` | `{default}` | {flag} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def _option_flags(names: tuple[str, ...]) -> dict[str, str]:
    """Setting name -> the long flag that sets it, for the named commands' options."""
    found: dict[str, str] = {}
    for prog, parser in commands(_parser()):
        if prog.removeprefix("tunesmith ") in names:
            for action in parser._actions:
                long_flags = [flag for flag in action.option_strings if flag.startswith("--")]
                if long_flags:
                    found.setdefault(action.dest, long_flags[0])
    return found


# -- commands ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from tunesmith.cli import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, in the order they were added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and subcommand below `parser`, depth first: ('tunesmith data audit', parser)."""
    for _, _, sub in subcommands(parser):
        yield sub.prog, sub
        yield from commands(sub)


@contextmanager
def _help_width(columns: int) -> Iterator[None]:
    """argparse wraps at the terminal's width (COLUMNS); the page should not depend on who built it."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def cli_page() -> str:
    """Every command's --help, as the parser prints it."""
    parser = _parser()
    lines = ["# Command reference", "",
             "Every command's `--help`, generated from the command-line parser itself. "
             "`tunesmith COMMAND --help` prints the same.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`tunesmith {name}`](#{_slug('tunesmith ' + name)}) | {_cell(help_text)} |"
              for name, help_text, _ in subcommands(parser)]
    with _help_width(HELP_WIDTH):
        lines += ["", "## tunesmith", "", "```text", parser.format_help().rstrip(), "```"]
        for prog, sub in commands(parser):
            lines += ["", f"## {prog}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _slug(heading: str) -> str:
    """The anchor MkDocs' toc gives a heading of plain words."""
    return "-".join(heading.lower().split())


# -- HTTP API ---------------------------------------------------------------------------------------


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI schema of the server with every router (the jobs API's too); nothing is loaded
    or started: no model, no worker, no socket."""
    from tunesmith.config import JobsConfig, ServeConfig
    from tunesmith.serve.app import create_app
    from tunesmith.serve.jobs.service import JobsService
    from tunesmith.serve.models import ServedModels

    with tempfile.TemporaryDirectory(prefix="tunesmith-docs-") as jobs_dir:
        jobs = JobsService(JobsConfig(jobs_dir=jobs_dir, workers=0))
        try:
            return create_app(ServedModels(), ServeConfig(), jobs).openapi()
        finally:
            jobs.store.close()


def routes(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every route in the schema, in the app's order."""
    return [(method.upper(), path, operation) for path, operations in schema["paths"].items()
            for method, operation in operations.items() if method in HTTP_METHODS]


def http_api_page(schema: dict[str, Any] | None = None) -> str:
    """A table of the server's routes, then every request body's fields."""
    schema = schema or openapi_schema()
    lines = ["# HTTP API reference", "",
             "Every route of `tunesmith serve --jobs`, generated from the server's own OpenAPI schema. "
             "Without `--jobs` the files and fine-tuning routes are absent. Requests and answers follow "
             "OpenAI's API where a route has an OpenAI counterpart; see [serving](../serving.md) and the "
             "[jobs API](../jobs.md) for what each does, and who may call it.", "",
             "| method | path | what | parameters | body |", "|---|---|---|---|---|"]
    for method, path, operation in routes(schema):
        lines.append(f"| {method} | `{path}` | {_cell(_what(operation))} | {_parameters(operation)} | "
                     f"{_body(operation)} |")
    lines += _body_schemas(schema)
    return "\n".join(lines) + "\n"


def _what(operation: dict[str, Any]) -> str:
    summary = operation.get("summary", "")
    description = " ".join((operation.get("description") or "").split("\n\n")[0].split())
    return f"{summary}: {description}" if description else summary


def _parameters(operation: dict[str, Any]) -> str:
    return ", ".join(f"`{p['name']}` ({p['in']}{', required' if p.get('required') else ''})"
                     for p in operation.get("parameters", []))


def _body(operation: dict[str, Any]) -> str:
    content = operation.get("requestBody", {}).get("content", {})
    return ", ".join(f"{_type(media['schema'])} ({kind})" for kind, media in content.items())


def _body_schemas(schema: dict[str, Any]) -> list[str]:
    """A table of fields for each schema a request body uses, and each schema those use."""
    definitions = schema.get("components", {}).get("schemas", {})
    wanted = [name for _, _, op in routes(schema) for name in _refs(op.get("requestBody", {}))]
    seen: list[str] = []
    while wanted:
        name = wanted.pop(0)
        if name not in seen and name in definitions:
            seen.append(name)
            wanted += _refs(definitions[name])
    lines = ["", "## Request bodies"]
    for name in seen:
        definition = definitions[name]
        required = set(definition.get("required", []))
        lines += ["", f"### {name}", "", "| field | type | required | default |", "|---|---|---|---|"]
        for field, spec in definition.get("properties", {}).items():
            default = f"`{json.dumps(spec['default'])}`" if "default" in spec else ""
            lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} | {default} |")
    return lines


def _refs(node: Any) -> list[str]:
    """The schema names a node refers to, anywhere inside it."""
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return own + [name for value in node.values() for name in _refs(value)]
    if isinstance(node, list):
        return [name for value in node for name in _refs(value)]
    return []


def _type(spec: dict[str, Any]) -> str:
    """A field's type in a few words: string, integer `>= 1, <= 16`, list of ChatMessage, a or b."""
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    options = spec.get("anyOf") or spec.get("oneOf")
    if options:
        shown = [_type(option) for option in options if option.get("type") != "null"]
        return " or ".join(shown) + (" or null" if len(shown) < len(options) else "")
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        kind = f"list of {_type(spec.get('items', {}))}"
    bounds = [f"{sign} {_number(spec[key])}" for key, sign in BOUNDS if key in spec]
    return f"{kind} `{', '.join(bounds)}`" if bounds else kind


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped, no raw HTML."""
    return _escape_html(" ".join(text.split()).replace("|", "\\|"))


def _escape_html(text: str) -> str:
    """`<` outside code spans written as &lt;, so that `<jobs_dir>` in a help text is shown, not
    taken for an HTML tag."""
    pieces = text.split("`")
    return "`".join(piece if index % 2 else piece.replace("<", "&lt;") for index, piece in enumerate(pieces))


# -- benchmarks -------------------------------------------------------------------------------------


def benchmarks_page() -> str:
    """benchmarks/README.md, as it is in the repository."""
    return (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")


GENERATED: dict[str, Callable[[], str]] = {
    "reference/settings.md": settings_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": http_api_page,
    "benchmarks.md": benchmarks_page,
}


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site (MkDocs >= 1.6: File.generated)."""
    from mkdocs.structure.files import File

    for src_uri, build in GENERATED.items():
        files.append(File.generated(config, src_uri, content=build()))
    return files
