# Two commands for a fresh machine: `make test` and `make report`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= demo
DATA   ?=
OUT    ?= runs/$(PROFILE)
STAMP  := $(VENV)/.installed

.PHONY: test report venv lint nbval clean bench

venv: $(STAMP)

# Torch comes as a local wheel on the project's machines; elsewhere pip fetches it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make test: create .venv, install nucseg[dev], run the tests, then nbval on demo copies of the
## notebooks (papermill injects the demo profile; nbval re-executes them and checks marked outputs)
test: $(STAMP)
	$(BIN)/ruff check nucseg tests
	$(BIN)/python -m pytest -q
	rm -rf build/nbval
	$(BIN)/nucseg report --profile demo --out build/nbval
	$(BIN)/python -m pytest -q --nbval-lax build/nbval/notebooks

## make report: run every notebook headless with papermill (PROFILE=demo by default)
report: $(STAMP)
	$(BIN)/nucseg report --profile $(PROFILE) --out $(OUT) $(if $(DATA),--data $(DATA))

lint: $(STAMP)
	$(BIN)/ruff check nucseg tests
	$(BIN)/ruff format --check nucseg tests

bench: $(STAMP)
	$(BIN)/python -m nucseg.bench metrics

clean:
	rm -rf build runs .pytest_cache
