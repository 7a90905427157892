"""The README and docs/ against the code: every `tunesmith ...` command line in a code block parses
with the real command-line parser, every example config and search space loads (and so does every
config or space written in a YAML block), every setting and HTTP route the pages name exists, and
every relative link resolves (to a file, or to a page docs/hooks.py generates into the site).

No model is loaded; the slowest part is building the server's OpenAPI schema (no socket, no worker).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tunesmith.cli import build_parser
from tunesmith.config import RunConfig, build_config, describe_settings, load_config
from tunesmith.tune.space import load_space, parse_space

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 250

# Command lines in the docs that may not parse, with why. None today: a placeholder such as runs/NAME
# is still a valid argument. Add one only with its reason, as {(file name, line number): why}.
UNPARSABLE: dict[tuple[str, int], str] = {}

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`\n]+`")
SECTIONS = "|".join(name for name in RunConfig.model_fields if name != "stages")
SETTING = re.compile(rf"^-?((?:{SECTIONS})\.[a-z_]+(?:\.[a-z_]+)*)(?:=.*|: .*)?$")
FILE_SUFFIXES = {"jsonl", "json", "csv", "tsv", "parquet", "gguf", "yaml", "txt", "md", "safetensors", "py",
                 "html", "png", "db", "conll"}
ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[\w/{}.\-]*)")


def _hooks() -> ModuleType:
    """docs/hooks.py, which is not a package module (MkDocs loads it by path)."""
    spec = importlib.util.spec_from_file_location("tunesmith_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()


def _where(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT)}:{line}"


def code_blocks(page: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first code line, code lines) of every fenced block."""
    blocks, current = [], None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if current is None and match:
            current = (match.group(3), number + 1, [], match.group(2), len(match.group(1)))
        elif current is not None and line.strip().startswith(current[3]) and not line.strip().strip("`~"):
            blocks.append(current[:3])
            current = None
        elif current is not None:
            current[2].append(line[current[4]:])
    assert current is None, f"{_where(page, current[1] - 1)}: a code block that is never closed"
    return blocks


def prose_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    inside, found = None, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if inside is None and match:
            inside = match.group(2)
        elif inside is not None and line.strip().startswith(inside) and not line.strip().strip("`~"):
            inside = None
        elif inside is None:
            found.append((number, line))
    return found


def command_lines(page: Path) -> list[tuple[int, str, list[str]]]:
    """(line, the command as written, tunesmith's arguments) of every `tunesmith ...` line in a code
    block, continuation lines (ending in a backslash) joined; `python -m tunesmith ...` and
    `torchrun ... -m tunesmith ...` count too."""
    found = []
    for _, first, lines in code_blocks(page):
        index = 0
        while index < len(lines):
            start, text = index, lines[index]
            while text.rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
                text = text.rstrip()[:-1] + " " + lines[index].strip()
            index += 1
            text = text.strip().removeprefix("$ ")
            if not (text.startswith("tunesmith ") or " -m tunesmith " in f" {text} "):
                continue
            words = shlex.split(text, comments=True)
            at = 0 if words[0] == "tunesmith" else words.index("-m") + 1
            found.append((first + start, text, words[at + 1:]))
    return found


def test_the_readme_stays_short_and_keeps_its_two_commands_first():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    _, _, first_block = code_blocks(ROOT / "README.md")[0]
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]


def test_every_command_line_in_the_docs_parses():
    parser = build_parser()
    failures, parsed, commands_seen = [], 0, set()
    for page in PAGES:
        for line, text, arguments in command_lines(page):
            if (page.name, line) in UNPARSABLE:
                continue
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(arguments)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    message = (errors.getvalue().strip().splitlines() or ["?"])[-1]
                    failures.append(f"{_where(page, line)}: {text}\n    {message}")
                    continue
            parsed += 1
            commands_seen.add(arguments[0])
    assert not failures, "command lines that tunesmith's parser refuses:\n" + "\n".join(failures)
    assert parsed >= 40, f"only {parsed} command lines found; is the extraction broken?"
    every_command = {name for name, _, _ in HOOKS.subcommands(parser)}
    assert every_command - commands_seen == set(), "commands with no example in README.md or docs/"


def test_the_command_line_check_catches_a_wrong_flag(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("```bash\ntunesmith train x.yaml \\\n    --learning-rate 1e-4   # no such flag\n```\n")
    [(line, _, arguments)] = command_lines(page)
    assert line == 2 and arguments == ["train", "x.yaml", "--learning-rate", "1e-4"]
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as refused:
        build_parser().parse_args(arguments)
    assert refused.value.code == 2


def test_commands_outside_fenced_blocks_are_not_left_unchecked():
    indented = [f"{_where(page, number)}: {line.strip()}" for page in PAGES for number, line in prose_lines(page)
                if re.match(r"^( {4,}|\t)(tunesmith|torchrun|python -m tunesmith) ", line)]
    assert not indented, "put these command lines in a ```bash block, where the test checks them:\n" + \
        "\n".join(indented)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_config_loads(path: Path):
    load_config(path)


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "spaces").glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_search_space_loads(path: Path):
    load_space(path)


def test_every_yaml_block_in_the_docs_is_a_valid_config_or_search_space():
    settings = {key for key, _, _ in describe_settings()}
    checked = 0
    for page in PAGES:
        for language, line, lines in code_blocks(page):
            if language not in ("yaml", "yml"):
                continue
            raw = yaml.safe_load("\n".join(lines))
            where = _where(page, line)
            assert isinstance(raw, dict), f"{where}: a YAML block that is not a mapping"
            if set(raw) <= set(RunConfig.model_fields):
                build_config(raw)
            elif set(raw) <= settings | {"objective"}:
                parse_space(raw, where)
            else:
                pytest.fail(f"{where}: neither a config nor a search space: {sorted(raw)}")
            checked += 1
    assert checked >= 4


def _named_settings(page: Path) -> list[tuple[int, str]]:
    """(line, setting path) of every `section.key` code span, and every --set key, on the page."""
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        spans = [span.strip("`") for span in CODE_SPAN.findall(line)]
        spans += re.findall(r"--set ([^\s=]+=)", line)
        for span in spans:
            match = SETTING.match(span)
            if match and match.group(1).rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                found.append((number, match.group(1)))
    return found


def test_every_setting_the_docs_name_exists():
    rows = describe_settings()
    leaves = {key for key, _, _ in rows}
    mappings = {key for key, default, _ in rows if default.startswith("{")}  # data.columns.prompt is an entry

    def exists(key: str) -> bool:
        return (key in leaves or any(leaf.startswith(key + ".") for leaf in leaves)
                or any(key.startswith(mapping + ".") for mapping in mappings))

    named = [(page, line, key) for page in PAGES for line, key in _named_settings(page)]
    unknown = [f"{_where(page, line)}: {key}" for page, line, key in named if not exists(key)]
    assert not unknown, "settings named in the docs that `tunesmith settings` does not list:\n" + "\n".join(unknown)
    assert len(named) >= 50


@pytest.fixture(scope="module")
def openapi() -> dict:
    return HOOKS.openapi_schema()


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_http_route_the_docs_name_exists(openapi: dict):
    served = {(method, _template(path)) for method, path, _ in HOOKS.routes(openapi)}
    paths = {path for _, path in served}
    missing = []
    for page in PAGES:
        for number, line in prose_lines(page):
            for method, path in ROUTE.findall(line):
                if (method, _template(path.rstrip("."))) not in served:
                    missing.append(f"{_where(page, number)}: {method} {path}")
            for span in CODE_SPAN.findall(line):
                path = span.strip("`")
                if re.fullmatch(r"/(v1|console)/[\w/{}\-]*", path) and _template(path) not in paths:
                    missing.append(f"{_where(page, number)}: {path}")
    assert not missing, "routes the docs name that the server does not have:\n" + "\n".join(missing)


def test_the_generated_reference_covers_every_command_setting_and_route(openapi: dict):
    cli = HOOKS.cli_page()
    assert all(f"\n## {prog}\n" in cli for prog, _ in HOOKS.commands(build_parser()))
    settings = HOOKS.settings_page()
    assert all(f"| `{key}` |" in settings for key, _, _ in describe_settings())
    http = HOOKS.http_api_page(openapi)
    assert all(f"| {method} | `{path}` |" in http for method, path, _ in HOOKS.routes(openapi))


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for number, line in prose_lines(page):
            for target in LINK.findall(CODE_SPAN.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue
                path = (page.parent / target.split("#", 1)[0]).resolve()
                generated = page.is_relative_to(DOCS) and path.is_relative_to(DOCS) and \
                    path.relative_to(DOCS).as_posix() in HOOKS.GENERATED
                if not (path.exists() or generated):
                    broken.append(f"{_where(page, number)}: {target}")
    assert not broken, "relative links that lead nowhere:\n" + "\n".join(broken)


def test_the_site_navigation_lists_every_page():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(entries: list) -> list[str]:
        found = []
        for entry in entries:
            for value in entry.values():
                found += pages(value) if isinstance(value, list) else [value]
        return found

    listed = pages(nav)
    on_disk = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert sorted(listed) == sorted(on_disk | set(HOOKS.GENERATED))
