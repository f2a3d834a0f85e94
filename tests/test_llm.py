"""Backend selection (pure) and real model traffic: replayed cassettes and live smoke tests."""

import socket

import pytest
from pydantic import BaseModel, Field
from vcr.errors import CannotOverwriteExistingCassetteException

from agent.llm import Backend, BackendConfigError, LLMSettings, chat_model, resolve_endpoint, structured_model


class Visit(BaseModel):
    """A tiny schema for structured-output checks."""

    patient_name: str = Field(description="the patient's full name")
    minutes_waited: int = Field(description="how long the patient waited, in minutes")


VISIT_PROMPT = "Extract the visit: 'Mr. John Carter waited 45 minutes at the front desk.'"


# -- settings -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in ["DEESCALATE_BACKEND", "DEESCALATE_MODEL", "DEESCALATE_BASE_URL", "DEESCALATE_API_KEY",
                 "DEESCALATE_STRUCTURED", "DEESCALATE_PROMPT_STYLE", "DEESCALATE_COACHING",
                 "OPENAI_API_KEY"]:  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_backend_is_embedded_with_transcript_prompting(clean_env):
    settings = LLMSettings.from_env()
    assert settings.backend is Backend.EMBEDDED
    assert settings.capabilities.prompt_style == "transcript"
    assert settings.capabilities.structured_method == "json_schema"


def test_base_url_alone_selects_a_compatible_server(clean_env):
    clean_env.setenv("DEESCALATE_BASE_URL", "http://localhost:11434/v1")
    clean_env.setenv("DEESCALATE_MODEL", "qwen2.5:7b")
    settings = LLMSettings.from_env()
    assert settings.backend is Backend.COMPATIBLE
    assert settings.capabilities.prompt_style == "chat"
    assert resolve_endpoint(settings) == ("http://localhost:11434/v1", "qwen2.5:7b", "not-needed")


def test_flags_override_environment(clean_env):
    clean_env.setenv("DEESCALATE_BACKEND", "openai")
    settings = LLMSettings.from_env(backend="compatible", prompt_style="transcript", structured_method="json_mode")
    assert settings.backend is Backend.COMPATIBLE
    assert settings.capabilities.prompt_style == "transcript"
    assert settings.capabilities.structured_method == "json_mode"


def test_the_embedded_model_shows_curated_coaching_first_unless_told_otherwise(clean_env):
    assert LLMSettings.from_env().capabilities.curated_coaching_first
    assert not LLMSettings.from_env(backend="compatible").capabilities.curated_coaching_first
    clean_env.setenv("DEESCALATE_COACHING", "model")
    assert not LLMSettings.from_env().capabilities.curated_coaching_first
    assert LLMSettings.from_env(backend="compatible", coaching="curated").capabilities.curated_coaching_first
    with pytest.raises(ValueError, match="coaching"):
        LLMSettings.from_env(coaching="sometimes")


def test_openai_without_key_is_a_clear_error(clean_env):
    with pytest.raises(BackendConfigError, match="OPENAI_API_KEY"):
        chat_model(LLMSettings(backend="openai"))


def test_openai_key_from_environment(clean_env):
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    model = chat_model(LLMSettings(backend="openai", model="gpt-4o-mini"), max_tokens=50)
    assert model.model_name == "gpt-4o-mini" and model.max_tokens == 50


def test_compatible_without_url_or_model_is_a_clear_error(clean_env):
    with pytest.raises(BackendConfigError, match="DEESCALATE_BASE_URL"):
        chat_model(LLMSettings(backend="compatible", model="m"))
    with pytest.raises(BackendConfigError, match="DEESCALATE_MODEL"):
        chat_model(LLMSettings(backend="compatible", base_url="http://localhost:8000/v1"))


def test_unknown_backend_is_rejected(clean_env):
    clean_env.setenv("DEESCALATE_BACKEND", "telepathy")
    with pytest.raises(ValueError, match="backend"):
        LLMSettings.from_env()


# -- recorded traffic (embedded default model) -----------------------------------------------


@pytest.mark.vcr
@pytest.mark.block_network
def test_streamed_reply(llm_settings):
    model = chat_model(llm_settings, temperature=0, max_tokens=40, seed=7)
    chunks = [chunk.content for chunk in model.stream("In one short sentence, greet a patient at a clinic desk.")]
    assert len(chunks) > 3, "the reply should arrive as a stream of chunks"
    assert len("".join(chunks).split()) >= 3


@pytest.mark.vcr
@pytest.mark.block_network
def test_server_stops_at_max_tokens(llm_settings):
    model = chat_model(llm_settings, temperature=0, max_tokens=8, seed=7)
    result = model.invoke("Write a long story about a dragon who runs a hospital.")
    assert result.response_metadata["finish_reason"] == "length"
    assert result.usage_metadata["output_tokens"] == 8


@pytest.mark.vcr
@pytest.mark.block_network
def test_structured_output(llm_settings):
    visit = structured_model(Visit, llm_settings, max_tokens=80).invoke(VISIT_PROMPT)
    assert isinstance(visit, Visit)
    assert "Carter" in visit.patient_name
    assert visit.minutes_waited == 45


@pytest.mark.block_network
def test_network_is_really_blocked_during_replay():
    with pytest.raises(RuntimeError, match="[Nn]etwork"), socket.create_connection(("127.0.0.1", 9), timeout=1):
        pass


@pytest.mark.vcr("test_streamed_reply.yaml")
@pytest.mark.block_network
def test_request_missing_from_cassette_fails_loudly(llm_settings, recording):
    if recording:
        pytest.skip("only meaningful in replay mode")
    model = chat_model(llm_settings, temperature=0, max_tokens=40, seed=7)
    with pytest.raises(CannotOverwriteExistingCassetteException, match="no recorded interaction matches"):
        model.invoke("A prompt that was never recorded.")


# -- live smoke tests (real llama.cpp server) --------------------------------------------------


@pytest.mark.live
def test_live_streamed_reply(live_settings):
    model = chat_model(live_settings, temperature=0, max_tokens=24)
    chunks = [chunk.content for chunk in model.stream("Say hello to a patient.")]
    assert len(chunks) > 1 and "".join(chunks).strip()


@pytest.mark.live
def test_live_max_tokens_is_enforced(live_settings):
    result = chat_model(live_settings, temperature=0, max_tokens=5).invoke("Tell me a very long story.")
    assert result.usage_metadata["output_tokens"] <= 5
    assert result.response_metadata["finish_reason"] == "length"


@pytest.mark.live
def test_live_structured_output(live_settings):
    visit = structured_model(Visit, live_settings, max_tokens=80).invoke(VISIT_PROMPT)
    assert isinstance(visit, Visit)
