"""What the API fuzzer asks of every answer; its ledger (requests sent by route and status, each
distinct defect with the first request that showed it); and the prober that sends the requests.

The invariants (issue 31, item 20): no 5xx (nor a server_error event in a stream); no traceback in
any body, no server path in an error; a 4xx of the JSON API in OpenAI's error shape; no answer to a
request without a valid key; no id of another project in an answer (unless the request itself named
it); and another project's id answered exactly as an id that does not exist (the walks send both)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from urllib.parse import unquote

import requests

from tests.integration.fuzz_server import KEYS, Target

TIMEOUT_S = 60
TRACE = bool(os.environ.get("FUZZ_TRACE"))  # FUZZ_TRACE=1 (with -s) prints every request and its answer
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')
# Routes that answer without a key: load balancers ask /health; the console's script,
# style sheet and login form hold nothing; the schema itself.
OPEN_ROUTES = ("GET /health", "GET /console/static/{name}", "GET /console/login",
               "POST /console/login", "GET /openapi.json")


@dataclass(frozen=True)
class Sent:
    """One request as sent, and who sent it."""

    label: str  # the route: `METHOD /path/{param}`
    key: str  # a name in fuzz_server.KEYS
    prepared: requests.PreparedRequest

    @property
    def text(self) -> str:
        """The request as text: what an answer may echo without leaking anything."""
        body = self.prepared.body or b""
        body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return unquote(self.prepared.url or "") + "\n" + body

    def describe(self, limit: int = 400) -> str:
        text = f"{self.prepared.method} {unquote(self.prepared.url or '').split('//', 1)[-1].split('/', 1)[-1]}"
        body = self.text.split("\n", 1)[1]
        return f"[key {self.key}] /{text}" + (f" body={body[:limit]!r}" if body else "")


@dataclass
class Defect:
    kind: str  # 5xx, 5xx in a stream, traceback leak, server path leak, wrong error shape, auth bypass,
    #            cross-project leak, wrong answer, no answer
    label: str
    status: int | None
    request: str  # the first request that showed it
    excerpt: str  # what the answer said
    count: int = 1


@dataclass
class Ledger:
    requests: Counter = field(default_factory=Counter)  # route -> requests sent
    statuses: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # route -> status -> count
    defects: dict = field(default_factory=dict)  # (kind, route, status, signature) -> Defect
    skipped: Counter = field(default_factory=Counter)  # route -> examples left out when the time ran out

    def sent(self, label: str, status: int | None) -> None:
        self.requests[label] += 1
        self.statuses[label][status or "no answer"] += 1

    def found(self, kind: str, sent: Sent, status: int | None, excerpt: str, signature: str = "") -> None:
        key = (kind, sent.label, status, signature)
        if key in self.defects:
            self.defects[key].count += 1
        else:
            self.defects[key] = Defect(kind, sent.label, status, sent.describe(), excerpt[:400])

    def summary(self, routes: list[str], not_fuzzed: dict[str, str]) -> str:
        lines = [f"{sum(self.requests.values())} requests to {len(self.requests)} of {len(routes)} routes"]
        for label in routes:
            counts = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses[label].items(), key=str))
            skipped = f" ({self.skipped[label]} examples left out: time budget)" if self.skipped[label] else ""
            lines.append(f"  {label}: {self.requests[label]} requests [{counts}]{skipped}")
        for label, why in not_fuzzed.items():
            lines.append(f"  not fuzzed: {label}: {why}")
        lines.append(f"{len(self.defects)} distinct defects")
        for defect in sorted(self.defects.values(), key=lambda d: (d.kind, d.label, str(d.status))):
            lines.append(f"  [{defect.kind}] {defect.label} -> {defect.status} (x{defect.count})\n"
                         f"      request: {defect.request}\n      answer:  {defect.excerpt!r}")
        return "\n".join(lines)


def error_of(response: requests.Response) -> dict | None:
    """The `error` object of an answer in OpenAI's shape, else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str):
        return error
    return None


def answer_signature(response: requests.Response) -> tuple:
    """What may differ between answers to two requests: the status and the error's code and param."""
    error = error_of(response) or {}
    return response.status_code, error.get("code"), error.get("param")


def server_error(ledger: Ledger, sent: Sent, response: requests.Response, raised: tuple[str, str] | None) -> None:
    """A 5xx, told apart from others by what raised it (the exception's type and place), or else by its
    error's code and message (numbers left out)."""
    error, body = error_of(response), response.text
    if raised is not None:
        ledger.found("5xx", sent, response.status_code, f"{body[:100]}  <- {raised[0]}: {raised[1]}", raised[0])
    else:
        cause = f"{error.get('code')}: {error['message']}" if error else body
        ledger.found("5xx", sent, response.status_code, body, re.sub(r"\d+", "N", cause)[:60])


def check_answer(ledger: Ledger, sent: Sent, response: requests.Response, *, foreign: list[str],
                 server_dir: str, raised: tuple[str, str] | None) -> None:
    """The invariants every answer keeps, whatever was asked. `raised`: the exception the server
    logged for this request, if any."""
    status, body = response.status_code, response.text
    error = error_of(response)
    if status >= 500:
        server_error(ledger, sent, response, raised)
    if "text/event-stream" in response.headers.get("content-type", "") and '"server_error"' in body:
        ledger.found("5xx in a stream", sent, status, body[body.find('"error"'):], "stream")
    if any(marker in body for marker in TRACEBACK_MARKERS):
        ledger.found("traceback leak", sent, status, body[body.find("Traceback"):] if "Traceback" in body else body)
    if status >= 400 and server_dir in body and server_dir not in sent.text:
        ledger.found("server path leak", sent, status, body[max(0, body.find(server_dir) - 100):])
    if sent.label.split(" ", 1)[1].startswith("/v1/") and 400 <= status < 500 and error is None:
        ledger.found("wrong error shape", sent, status, body, response.headers.get("content-type", ""))
    if sent.key in ("none", "wrong") and sent.label not in OPEN_ROUTES and 200 <= status < 300:
        ledger.found("auth bypass", sent, status, body)
    leaked = [value for value in foreign if value in body and value not in sent.text]
    if leaked:
        ledger.found("cross-project leak", sent, status, f"names {leaked[0]}: {body[:200]}", "id in answer")


def same_as_missing(ledger: Ledger, sent: Sent, response: requests.Response, twin: requests.Response) -> None:
    """Another project's id answered as the `twin` request, the same with ids that exist nowhere, is."""
    if 200 <= response.status_code < 300 or answer_signature(response) != answer_signature(twin):
        ledger.found("cross-project leak", sent, response.status_code,
                     f"{response.text[:200]}  <- while an id that does not exist gets {twin.status_code}: "
                     f"{twin.text[:120]}", json.dumps(answer_signature(response)))


# -- whose ids --------------------------------------------------------------------------------------
def project_ids(target: Target, key: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The ids a key may name as its own, and those of another project."""
    alpha, beta = target.ids["alpha"], target.ids["beta"]
    both = {kind: alpha[kind] + beta[kind] for kind in alpha}
    return {"alpha": (alpha, beta), "beta": (beta, alpha), "admin": (both, {})}.get(key, ({}, alpha))


def foreign_values(target: Target, key: str) -> list[str]:
    return [value for values in project_ids(target, key)[1].values() for value in values]


def missing(value: str) -> str:
    """An id of the same form that exists nowhere."""
    return value + "0"


class Prober:
    """Sends requests to the target as one of KEYS and puts what it finds in the ledger."""

    def __init__(self, target: Target, ledger: Ledger) -> None:
        self.target, self.ledger = target, ledger
        self.session = requests.Session()

    def send(self, label: str, key: str, request: requests.Request) -> tuple[Sent, requests.Response | None]:
        token = KEYS[key]
        if token is not None:
            request.headers = {**(request.headers or {}), "Authorization": f"Bearer {token}"}
        sent = Sent(label, key, self.session.prepare_request(request))
        self.target.server_errors.raised.clear()  # what an earlier request raised (a stream's error) is not this one's
        try:
            response = self._send_twice(sent.prepared)
        except requests.RequestException as exc:
            self.ledger.sent(label, None)
            raised = self.target.server_errors.take() or ("", "nothing logged")
            self.ledger.found("no answer", sent, None, f"{type(exc).__name__}: {exc}  <- {raised[0]}: {raised[1]}",
                              raised[0])
            return sent, None
        self.ledger.sent(label, response.status_code)
        if TRACE:
            print(f"{sent.describe(200)} -> {response.status_code} {response.text[:200]!r}")
        # an unhandled exception answers a bare 500 and is logged just after (a handled one, in OpenAI's shape, is not)
        raised = self.target.server_errors.take() if response.status_code >= 500 and not error_of(response) else None
        check_answer(self.ledger, sent, response, foreign=foreign_values(self.target, key),
                     server_dir=str(self.target.server_dir), raised=raised)
        return sent, response

    def _send_twice(self, prepared: requests.PreparedRequest) -> requests.Response:
        """A connection the server closed after the previous answer fails the next request sent on it:
        that one is sent again on a new connection, so that "no answer" is this request's own doing."""
        try:
            return self.session.send(prepared, timeout=TIMEOUT_S, allow_redirects=False)
        except requests.ConnectionError:
            self.session.close()
            self.session = requests.Session()
            return self.session.send(prepared, timeout=TIMEOUT_S, allow_redirects=False)

    def post_json(self, label: str, key: str, body: object, path: str | None = None
                  ) -> tuple[Sent, requests.Response | None]:
        """POST `body` as JSON to `path`, by default the route's own (`label`'s, without parameters)."""
        method, path = label.split(" ", 1)[0], path or label.split(" ", 1)[1]
        data = json.dumps(body).encode()  # NaN and Infinity as Python writes them (requests' json= refuses them)
        return self.send(label, key, requests.Request(method, self.target.root_url + path, data=data,
                                                      headers={"Content-Type": "application/json"}))
