# Two commands for a fresh machine: `make test` and `make report`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= demo
DATA   ?=
OUT    ?= runs/$(PROFILE)
STAMP  := $(VENV)/.installed

.PHONY: test report venv lint nbval clean bench rescore

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

## make rescore: score the committed U-Net weights on the MoNuSeg test set again (e.g. after a
## ground-truth fix) without retraining, re-render 01 and 05, and log the scoring in the model card
MONUSEG ?= ../shared/monuseg
WEIGHTS := nucseg/weights/unet_monuseg_cpu.pt
rescore: $(STAMP)
	$(BIN)/nucseg predict --method unet --tta flips $(MONUSEG)/test/images \
		--out runs/monuseg-cpu/predictions/unet/test
	$(BIN)/nucseg report --profile monuseg-cpu --data $(MONUSEG) --only 01 05 --render
	$(BIN)/python -m nucseg.model_card rescore $(WEIGHTS) runs/monuseg-cpu/metrics/unet.csv \
		--commit "$$(git rev-parse --short HEAD)" --date "$$(date +%F)" --how "make rescore" --tta flips \
		--ground-truth "$$($(BIN)/python -c 'from nucseg.data.poly2mask import GROUND_TRUTH_RULE as r; print(r)')"

lint: $(STAMP)
	$(BIN)/ruff check nucseg tests
	$(BIN)/ruff format --check nucseg tests

bench: $(STAMP)
	$(BIN)/python -m nucseg.bench metrics

clean:
	rm -rf build runs .pytest_cache
