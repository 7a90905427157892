"""A model that cannot be loaded says why: the real cause, not "the hub is unreachable"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunesmith.errors import ModelError
from tunesmith.models.load import load_causal_lm, resolve_model


def _cached_hub_model(cache: Path, hub_id: str, config: dict) -> None:
    """A model in the local Hugging Face cache (the layout the hub client writes), as if fetched earlier."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text(json.dumps(config))


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once at import; the env var alone is too late
    return cache


@pytest.mark.parametrize(("config", "cause"), [
    ({"model_type": "frobnicator", "hidden_size": 8}, "does not support this model's architecture"),
    ({"model_type": "acmenet", "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig",
                                             "AutoModelForCausalLM": "modeling_acme.AcmeModel"}},
     "needs Python code shipped with it; set model.trust_remote_code=true"),
])
def test_offline_hub_model_in_the_cache_reports_the_real_cause(hub_cache: Path, config: dict, cause: str):
    _cached_hub_model(hub_cache, "acme/model", config)
    with pytest.raises(ModelError) as error:
        load_causal_lm(resolve_model("acme/model"))
    message = str(error.value)
    assert cause in message and "unreachable" not in message and "\n" not in message


def test_offline_hub_model_absent_from_the_cache_says_offline(hub_cache: Path):
    with pytest.raises(ModelError, match="Hub is unreachable from this machine and the model is not in the local"):
        load_causal_lm(resolve_model("acme/absent"))


def test_offline_the_hub_client_sends_no_request(hub_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """Offline, nothing is asked of the hub: transformers' look for an adapter config ignores
    local_files_only, and without a network the client retried that request for 27 s before the one
    line. A real HTTP server on 127.0.0.1 stands in for the hub and counts what reaches it."""
    import http.server
    import threading

    import huggingface_hub.constants as constants

    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        # tunesmith finds the hub unreachable (HF_HUB_OFFLINE, as the fixture sets it); the client, as in a
        # process that imported it before the variable was set or with no variable at all, is not offline
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        with pytest.raises(ModelError, match="Hub is unreachable"):
            load_causal_lm(resolve_model("acme/absent"))
    finally:
        server.shutdown()
    assert requests == []


def test_damaged_local_weights_are_named(tiny_model_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="weights file is damaged or incomplete"):
        load_causal_lm(resolve_model(str(broken)))
