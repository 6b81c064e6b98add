# Two entry points: `make demo` and `make test`. Both bootstrap .venv by themselves.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck layers unit wheel-check bench clean serve

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Bytewax ships wheels for CPython 3.11/3.12 only)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/heatmetro demo

serve: $(STAMP)
	$(BIN)/heatmetro serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -n 2 -q

wheel-check: $(STAMP)
	PY=$(PY) .ci/wheel_check

# The static checks run beside pytest (its tests that wait leave ~30% of two cores idle),
# lines kept whole; the wheel check after, alone (it builds from this tree).
test: $(STAMP)
	$(MAKE) --no-print-directory -j4 --output-sync=line lint typecheck layers unit
	$(MAKE) --no-print-directory wheel-check

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/snapshot.py

clean:
	rm -rf build demo_run .pytest_cache .mypy_cache
