"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (issue 31, item 20), against a
real server on 127.0.0.1 with two projects and an admin (fuzz_server.py). The goal: no 5xx, no
traceback in a response, no answer to another project's id other than the 404 an id that exists
nowhere gets (fuzz_checks.py lists every invariant).

- the cross-project probes: beta names each of alpha's real ids in every place of every route
  that takes one (fuzz_schema.py);
- the schema walk: schemathesis generates valid and invalid requests for every route, pointed at
  real ids, sent with no key, a wrong key, either project's key or the admin's (fuzz_schema.py);
- hand-written properties for what schemathesis does not generate: multipart uploads, bodies that
  are not JSON, chats that reach the model, stored completions and their feedback read back, jobs
  that reach the job rules (fuzz_properties.py).

The default suite runs each walk bounded and derandomized (a fixed seed, a fixed number of examples,
a wall budget); `-m slow` runs them long. Each test prints its ledger (run with -s): requests by
route and status, the routes not covered and why, each distinct defect with the first request that
showed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the API fuzzer needs schemathesis (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="the files and jobs routes need the serve extra (pip install -e .[serve])")

import requests  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from tests.integration.fuzz_checks import TIMEOUT_S, Ledger, Prober  # noqa: E402
from tests.integration.fuzz_properties import (  # noqa: E402
    generation_walk,
    job_walk,
    raw_walk,
    stored_walk,
    upload_walk,
)
from tests.integration.fuzz_schema import (  # noqa: E402
    VALID_BODIES,
    operations_in_order,
    probes_of,
    run_probe,
    schema_walk,
)
from tests.integration.fuzz_server import Target, fuzz_target  # noqa: E402


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    with fuzz_target(tmp_path_factory.mktemp("fuzz-server"), tiny_model_dir) as running:
        yield running


@pytest.fixture(scope="module")
def schema(target: Target):
    return schemathesis.openapi.from_url(f"{target.root_url}/openapi.json", config=SchemathesisConfig())


@pytest.fixture(scope="module")
def openapi(target: Target) -> dict:
    return requests.get(f"{target.root_url}/openapi.json", timeout=TIMEOUT_S).json()


def walked(title: str, target: Target, walk: Callable[[Prober], dict[str, str]], routes: list[str] | None = None
           ) -> tuple[Ledger, str]:
    """Run `walk` (it returns the routes it left out, and why) and print its ledger."""
    ledger, started = Ledger(), time.monotonic()
    not_covered = walk(Prober(target, ledger)) or {}
    summary = ledger.summary(routes or sorted(ledger.requests), not_covered)
    print(f"\n{title}, {time.monotonic() - started:.0f} s:\n{summary}")
    return ledger, summary


def test_another_projects_ids_are_answered_as_ids_that_do_not_exist(target: Target, schema, openapi: dict) -> None:
    """Beta names each of alpha's real ids in every place of every route that takes one: 404, the
    same answer as for an id that exists nowhere, while alpha's own key gets the row. First in the
    module: the walks after it may delete the rows."""
    probes = [probe for operation in operations_in_order(schema)[0] for probe in probes_of(operation, openapi, target)]

    def probe_all(prober: Prober) -> dict[str, str]:
        for probe in probes:
            run_probe(prober, probe)
        return {}

    ledger, summary = walked(f"cross-project probes ({len(probes)})", target, probe_all)
    assert len(ledger.requests) >= 25, summary  # every route that names a file, job, model or completion
    assert not ledger.defects, summary


def test_every_route_of_the_schema_keeps_the_invariants(target: Target, schema) -> None:
    routes = [op.label for op in operations_in_order(schema)[0]]
    ledger, summary = walked("schema walk", target, lambda prober: schema_walk(prober, schema, 25, budget_s=90),
                             routes)
    assert set(ledger.requests) == set(routes), summary
    assert not ledger.defects, summary


def test_uploads_read_back_as_sent_for_their_project_only(target: Target) -> None:
    """POST /v1/files is multipart: schemathesis rarely makes an upload the server takes; these do."""
    ledger, summary = walked("uploads", target, lambda prober: upload_walk(prober, 100))
    assert ledger.statuses["POST /v1/files"][200] >= 5, summary  # the property saw accepted uploads
    assert not ledger.defects, summary


def test_bodies_that_are_not_json_get_a_clear_4xx(target: Target, schema) -> None:
    routes = sorted({op.label for op in operations_in_order(schema)[0] if op.method.upper() == "POST"})
    ledger, summary = walked("bodies that are not JSON", target,
                             lambda prober: raw_walk(prober, routes, list(VALID_BODIES.values()), 200), routes)
    assert not ledger.defects, summary


def test_chats_and_completions_at_the_edges_of_their_ranges(target: Target) -> None:
    ledger, summary = walked("chats and completions", target, lambda prober: generation_walk(prober, 40))
    assert ledger.statuses["POST /v1/chat/completions"][200] >= 10, summary  # the walk reached the model
    assert not ledger.defects, summary


def test_stored_completions_take_any_metadata_and_feedback_and_read_back(target: Target) -> None:
    ledger, summary = walked("stored completions and feedback", target, lambda prober: stored_walk(prober, 40))
    assert ledger.statuses["POST /v1/chat/completions/{completion_id}/feedback"][200] >= 5, summary
    assert not ledger.defects, summary


def test_jobs_with_any_settings_get_a_clear_answer(target: Target) -> None:
    ledger, summary = walked("fine-tuning jobs", target, lambda prober: job_walk(prober, 100))
    assert ledger.statuses["POST /v1/fine_tuning/jobs"][200] >= 5, summary  # the walk got jobs created
    assert not ledger.defects, summary


@pytest.mark.slow
def test_a_long_fuzz_of_every_route(target: Target, schema) -> None:
    def every_walk(prober: Prober) -> dict[str, str]:
        not_covered = schema_walk(prober, schema, 200, budget_s=1800)
        upload_walk(prober, 1000)
        generation_walk(prober, 1000, max_n=16, budget_s=900)
        stored_walk(prober, 1000)
        job_walk(prober, 1000)
        raw_walk(prober, sorted({op.label for op in operations_in_order(schema)[0] if op.method.upper() == "POST"}),
                 list(VALID_BODIES.values()), 1000)
        return not_covered

    ledger, summary = walked("long fuzz", target, every_walk)
    assert not ledger.defects, summary
