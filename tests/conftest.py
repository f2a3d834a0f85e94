"""Shared fixtures: cassette replay (default) or recording against the live embedded model.

* Replay (``make test``): model traffic comes from ``tests/cassettes/``; requests match on method,
  path and body, so a cassette replays whatever port it was recorded on, and a request that is
  not in the cassette fails the test (record mode ``none``).
* Record (``make record``): ``--record-mode=rewrite`` starts the embedded server with the default
  model (``DEESCALATE_RECORD_MODEL`` picks another) and rewrites the cassettes.
* Live tests (marker ``live``) start a real server with the small SmolLM2 model, or the default
  model when ``DEESCALATE_LIVE_MODEL=default``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.llm import Backend, LLMSettings
from agent.runtime import EmbeddedServer

# Nothing listens on the discard port: in replay mode every request must be answered by a cassette.
REPLAY_BASE_URL = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="session")
def vcr_config() -> dict:
    return {
        "match_on": ["method", "path", "body"],
        "filter_headers": ["authorization", "api-key", "x-api-key", "openai-organization", "cookie"],
        "decode_compressed_response": True,
    }


def _recording(config: pytest.Config) -> bool:
    return config.getoption("--record-mode") not in (None, "none")


@pytest.fixture(scope="session")
def recording(pytestconfig: pytest.Config) -> bool:
    return _recording(pytestconfig)


@pytest.fixture(scope="session")
def llm_settings(pytestconfig: pytest.Config) -> Iterator[LLMSettings]:
    """Settings for tests whose model traffic lives in cassettes (use with ``@pytest.mark.vcr``)."""
    model = os.environ.get("DEESCALATE_RECORD_MODEL", "default")
    if not _recording(pytestconfig):
        yield LLMSettings(backend=Backend.EMBEDDED, base_url=REPLAY_BASE_URL, model=model)
        return
    with EmbeddedServer(model=model) as server:
        yield LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=model)


@pytest.fixture(scope="session")
def live_server() -> Iterator[EmbeddedServer]:
    """A real llama.cpp server (small model unless DEESCALATE_LIVE_MODEL says otherwise)."""
    with EmbeddedServer(model=os.environ.get("DEESCALATE_LIVE_MODEL", "small")) as server:
        yield server


@pytest.fixture(scope="session")
def live_settings(live_server: EmbeddedServer) -> LLMSettings:
    model = os.environ.get("DEESCALATE_LIVE_MODEL", "small")
    return LLMSettings(backend=Backend.EMBEDDED, base_url=live_server.openai_base_url, model=model)


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose system dependency is missing, but fail under CI, where .ci/run installs it.

    A skipped browser or PostgreSQL test in CI would look green while proving nothing.
    """
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)
