# The two set-up-free commands: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TYPED := spotyolo functions cdk

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION = 20
export YOLO_OFFLINE = 1

.PHONY: venv test lint demo bench mutate chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[dev]'
	$(PY) -m cdk.lambda_bundle   # the Lambda's CPython 3.14 wheels, once: synth and tests then run offline
	touch $(STAMP)

venv: $(STAMP)

# the modules run in parallel, one whole module per worker (tests/conftest.py): one worker more
# than the cores (up to 5), since whole-pipeline tests spend much of their time waiting
# (5m16s here with 3 workers, 5m44s with 2, ~11 min serially); XDIST="-n 0" runs serially
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$((n + 1)))
XDIST ?= -n $(WORKERS) --dist loadgroup --no-loadscope-reorder
test: lint
	$(PY) -m pytest $(XDIST)

demo: $(STAMP)
	$(PY) examples/generate_shapes.py examples/shapes/dataset
	$(VENV)/bin/spotyolo local examples/shapes --force

# ruff (with the C901 complexity gate), the format, types, and the import layers
# (docs/ARCHITECTURE.md; the contracts are [tool.importlinter] in pyproject.toml)
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy $(TYPED)
	$(VENV)/bin/lint-imports

# Mutation testing of the money-and-correctness core with the fast tests (docs/TESTING.md).
# Slow (tens of minutes on 2 cores): not part of `make test`. MODULES="planning config" for some.
mutate: $(STAMP)
	$(PY) tools/mutate.py $(if $(CHILDREN),--children $(CHILDREN)) $(MODULES)

# the seeded fault campaign (README, "Guarantees"): N seeds, the table into bench/README.md
N ?= 200
chaos: $(STAMP)
	$(PY) bench/chaos.py --seeds $(N) --write bench/README.md

clean:
	rm -rf $(VENV) cdk.out outputs mutants .pytest_cache .mypy_cache .ruff_cache
