"""The walk of every route from the server's own OpenAPI schema: schemathesis generates each
request (valid and invalid ones), the walk points its ids at the projects' real rows, and sends it
with each of fuzz_server.KEYS; and the cross-project probes, one of alpha's ids at a time in every
place of every route that takes one, sent with beta's key."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from urllib.parse import quote

import requests
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from tests.integration.fuzz_checks import (
    Prober,
    Sent,
    missing,
    project_ids,
    same_as_missing,
)
from tests.integration.fuzz_properties import walk_settings, with_lone_surrogate
from tests.integration.fuzz_server import BASE_MODEL, SENDERS, Target

# Path parameters that name a project's row, by name (/console/static/{name} names a file of the code).
PATH_KINDS = {"file_id": "file", "job_id": "job", "completion_id": "completion", "name": "model", "path": "run_file"}
BODY_KINDS = {"model": "model", "training_file": "file", "validation_file": "file"}


def after_kind(path: str) -> str | None:
    """What an `after` cursor of a list names."""
    for part, kind in (("/events", "event"), ("/checkpoints", "checkpoint"), ("/messages", "message"),
                       ("/v1/files", "file"), ("/v1/fine_tuning/jobs", "job"), ("/v1/chat/completions", "completion")):
        if part in path:
            return kind
    return None


def send_case(prober: Prober, case, key: str, data=None) -> tuple[Sent, requests.Response | None]:
    """Send a schemathesis case as `key` (with `data`, a lone surrogate may go into its JSON body on
    the way); schemathesis's own not_a_server_error runs beside our checks."""
    kwargs = case.as_transport_kwargs(base_url=prober.target.root_url)
    if data is not None and "json" in kwargs:
        kwargs["json"] = break_a_string(copy.deepcopy(kwargs["json"]), data)
    body = {name: value for name, value in kwargs.items() if name in ("json", "data", "files")}
    request = requests.Request(kwargs["method"], kwargs["url"], headers=dict(kwargs["headers"]),
                               params=kwargs.get("params"), cookies=kwargs.get("cookies"), **body)
    sent, response = prober.send(case.operation.label, key, request)
    if response is not None:
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup:
            pass  # check_answer has it, with the request that showed it
    return sent, response


# -- the ids a fuzzed request names ---------------------------------------------------------------
def slots(case) -> list[tuple[dict, str, str]]:
    """(container, field, kind) of every place in `case` that may name a project's row."""
    found = []
    if not case.path.startswith("/console/static"):
        found += [(case.path_parameters, name, PATH_KINDS[name]) for name in case.path_parameters if name in PATH_KINDS]
    kind = after_kind(case.path) if case.method.upper() == "GET" else None
    if kind is not None and any(p.name == "after" for p in case.operation.query):
        found.append((case.query, "after", kind))
    if isinstance(case.body, dict):
        found += [(case.body, name, kind) for name, kind in BODY_KINDS.items() if name in case.body]
    return found


def point_at_real_ids(case, key: str, target: Target, data) -> list[tuple[dict, str, str]]:
    """Replace generated ids in `case` with real ones (its own, another project's, shared) as drawn;
    returns the places now naming another project's row."""
    own, foreign = project_ids(target, key)
    shared = {"model": [BASE_MODEL], "run_file": target.run_files}
    named_foreign = []
    for container, name, kind in slots(case):
        choices = {origin: values.get(kind, []) for origin, values in
                   (("own", own), ("foreign", foreign), ("shared", shared))}
        origins = ["generated"] + [o for o, values in choices.items() if values]
        if kind == "model":  # the served base model half the time, so that requests get as far as generating
            origins += ["shared"] * (len(origins) - 1)
        origin = data.draw(st.sampled_from(origins))
        if origin != "generated":
            container[name] = data.draw(st.sampled_from(choices[origin]))
            if origin == "foreign":
                named_foreign.append((container, name, container[name]))
    return named_foreign


def string_places(value, found: list) -> list:
    """(container, key, is_key) of every text in a JSON value: dict keys, dict values, list items."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(value, dict):
            found.append((value, key, True))
        if isinstance(item, str):
            found.append((value, key, False))
        else:
            string_places(item, found)
    return found


def break_a_string(body, data):
    """A quarter of the time, `body` with a lone surrogate in one of its texts. JSON can carry one
    (`"\\ud800"`, as JavaScript's JSON.stringify writes it) but UTF-8 cannot, and schemathesis never
    generates one."""
    places = string_places(body, [])
    if not places or data.draw(st.integers(0, 3)) != 0:
        return body
    container, key, is_key = data.draw(st.sampled_from(places))
    broken = data.draw(with_lone_surrogate)
    if is_key:
        container[broken] = container.pop(key)
    else:
        container[key] = broken
    return body


def fuzz_case(prober: Prober, case, key: str, data) -> None:
    named_foreign = point_at_real_ids(case, key, prober.target, data)
    sent, response = send_case(prober, case, key, data if not named_foreign else None)
    if response is None or not named_foreign or key not in ("alpha", "beta"):
        return
    for container, name, value in named_foreign:
        container[name] = missing(value)
    _, twin = send_case(prober, case, key)
    if twin is not None:
        same_as_missing(prober.ledger, sent, response, twin)


def fuzz_operation(prober: Prober, operation, mode: GenerationMode, examples: int, deadline: float) -> None:
    @walk_settings(examples)
    @given(case=operation.as_strategy(generation_mode=mode), key=st.sampled_from(SENDERS), data=st.data())
    def walk(case, key, data) -> None:
        if time.monotonic() > deadline:
            prober.ledger.skipped[operation.label] += 1
            return
        fuzz_case(prober, case, key, data)

    try:
        walk()
    except Unsatisfiable:  # no invalid request exists (a route with no parameters and no body)
        assert mode == GenerationMode.NEGATIVE, operation.label


def has_invalid_requests(operation) -> bool:
    """Can a request to `operation` break its schema? Not one whose only parameters are text in the path
    (any text is valid there): schemathesis would try for a second and give up."""
    return bool(operation.body or operation.query or operation.headers or operation.cookies)


def operations_in_order(schema) -> tuple[list, dict[str, str]]:
    """Every operation, deletions last (they take the seeded rows with them); and those that failed to load."""
    loaded, broken = [], {}
    for result in schema.get_all_operations():
        try:
            loaded.append(result.ok())
        except AttributeError:
            broken[str(result.err())[:80]] = "schemathesis could not load it"
    return sorted(loaded, key=lambda op: (op.method.upper() == "DELETE", op.path, op.method)), broken


def schema_walk(prober: Prober, schema, examples: int, budget_s: float) -> dict[str, str]:
    """`examples` valid and as many invalid requests per route, within `budget_s` seconds (examples
    left when it runs out are counted in the ledger); returns the routes schemathesis could not load."""
    operations, not_covered = operations_in_order(schema)
    deadline = time.monotonic() + budget_s
    for operation in operations:
        fuzz_operation(prober, operation, GenerationMode.POSITIVE, examples, deadline)
        if has_invalid_requests(operation):
            fuzz_operation(prober, operation, GenerationMode.NEGATIVE, examples, deadline)
        else:
            not_covered[f"{operation.label} (invalid requests)"] = "none exist: its only parameters are text in the path"
    return not_covered


# -- another project's real ids, one at a time ------------------------------------------------------
# A body each route accepts from beta as it stands; the probes put alpha's ids into it one field at a time.
VALID_BODIES = {
    "POST /v1/chat/completions": {"model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    "POST /v1/completions": {"model": BASE_MODEL, "prompt": "hi", "max_tokens": 2},
    "POST /v1/classifications": {"model": BASE_MODEL, "input": "hi"},
    "POST /v1/entities": {"model": BASE_MODEL, "input": "hi"},
    "POST /v1/answers": {"model": BASE_MODEL, "questions": [{"question": "Who?", "context": "Ann."}]},
    "POST /v1/fine_tuning/jobs": {"model": BASE_MODEL, "training_file": "beta:file"},
    "POST /v1/chat/completions/{completion_id}": {"metadata": {"topic": "probe"}},
    "POST /v1/chat/completions/{completion_id}/feedback": {"score": 1},
    "POST /v1/console/check": {"model": BASE_MODEL, "training_file": "beta:file"},
    "POST /v1/console/estimate": {"model": BASE_MODEL, "training_file": "beta:file"},
    "POST /v1/console/jobs/{job_id}/exports": {"format": "gguf-lora"},
    "POST /v1/console/generations/{name}/current": {"generation": 0},
}


@dataclass
class Probe:
    """One request of beta's that names one of alpha's rows in one place (path, query or body)."""

    operation: object
    path_parameters: dict
    query: dict
    body: dict | None
    place: str  # path, query or body
    name: str
    value: str

    def request(self, value: str, root_url: str) -> requests.Request:
        path_parameters, query, body = dict(self.path_parameters), dict(self.query), copy.deepcopy(self.body)
        {"path": path_parameters, "query": query, "body": body}[self.place][self.name] = value
        path = self.operation.path.format(**{k: quote(v, safe="") for k, v in path_parameters.items()})
        return requests.Request(self.operation.method.upper(), root_url + path, params=query,
                                json=body if body is not None else None)


# Routes whose row is a file the fuzzed server's jobs never make (an export of a finished job): even
# alpha's own key gets 404 there. test_serve_walls.py's table probes them with a job given a real export.
NEEDS_A_REAL_FILE = {"GET /v1/console/jobs/{job_id}/exports/{export_id}/{name}"}


def body_fields(openapi: dict, operation) -> list[str]:
    """The JSON body's fields that name a project's row (model, training_file, validation_file)."""
    content = openapi["paths"][operation.path][operation.method.lower()].get("requestBody", {}).get("content", {})
    reference = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    fields = openapi["components"]["schemas"].get(reference.rsplit("/", 1)[-1], {}).get("properties", {})
    return [name for name in fields if name in BODY_KINDS]


def probes_of(operation, openapi: dict, target: Target) -> list[Probe]:
    """Every place of `operation` that may name a project's row, each filled with alpha's ids in turn;
    the other places hold beta's own rows (or shared ones)."""
    beta = {kind: values[0] for kind, values in target.ids["beta"].items() if values}
    fill = {**beta, "model": BASE_MODEL, "run_file": "report.md"}
    path_parameters = {p.name: fill.get(PATH_KINDS.get(p.name), "x") for p in operation.path_parameters}
    places = [("path", name, PATH_KINDS[name]) for name in path_parameters
              if name in PATH_KINDS and PATH_KINDS[name] != "run_file" and not operation.path.startswith("/console/static")
              and operation.label not in NEEDS_A_REAL_FILE]
    places += [("body", name, BODY_KINDS[name]) for name in body_fields(openapi, operation)]
    kind = after_kind(operation.path) if operation.method.upper() == "GET" else None
    if kind is not None and any(p.name == "after" for p in operation.query):
        places.append(("query", "after", kind))
    body = copy.deepcopy(VALID_BODIES.get(operation.label))
    if places and body is None and operation.body:
        raise AssertionError(f"{operation.label}: add a body it accepts to VALID_BODIES, so that it is probed")
    if body is not None:
        body = {k: fill["file"] if v == "beta:file" else v for k, v in body.items()}
    return [Probe(operation, path_parameters, {}, body, place, name, value)
            for place, name, kind in places for value in target.ids["alpha"][kind][:2]]


def run_probe(prober: Prober, probe: Probe) -> None:
    label = probe.operation.label
    sent, response = prober.send(label, "beta", probe.request(probe.value, prober.target.root_url))
    _, twin = prober.send(label, "beta", probe.request(missing(probe.value), prober.target.root_url))
    if response is None or twin is None:
        return
    if probe.place != "query" and response.status_code != 404:
        prober.ledger.found("cross-project leak", sent, response.status_code, response.text, "not 404")
    same_as_missing(prober.ledger, sent, response, twin)
    if probe.operation.method.upper() == "GET" and probe.place == "path":  # the id is real: alpha gets it
        _, own = prober.send(label, "alpha", probe.request(probe.value, prober.target.root_url))
        assert own is not None and own.status_code == 200, f"{label}: alpha's own {probe.value} -> {own.status_code}"
