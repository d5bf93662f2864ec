# volprep: `make shards` (set-up + a real job on the demo dataset), `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?=
PIPELINE ?= pipelines/default.toml
OUT    ?= $(if $(DATA),shards/$(notdir $(patsubst %/,%,$(DATA))),shards/demo)
WORKERS ?=
ARGS   ?=

.PHONY: install shards demo test test-fast testdata lint bench train clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Without DATA: writes the built-in demo dataset and shards it into shards/demo/.
shards: $(STAMP)
ifeq ($(strip $(DATA)),)
	test -f shards/demo-data/dataset.json || $(BIN)/volprep demo shards/demo-data
	$(BIN)/volprep shards shards/demo-data --out $(OUT) --config $(PIPELINE) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS); \
	  status=$$?; [ $$status -eq 0 ] || [ $$status -eq 3 ] || exit $$status
else
	$(BIN)/volprep shards $(DATA) --out $(OUT) --config $(PIPELINE) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS); \
	  status=$$?; [ $$status -eq 0 ] || [ $$status -eq 3 ] || exit $$status
endif

# The real-anatomy test corpus (tests/realdata.py), cached in .testdata/; and dcm2niix, the
# DICOM tests' independent converter (Debian package; installed when run as root).
testdata: $(STAMP)
	$(BIN)/python tests/realdata.py
	command -v dcm2niix >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q dcm2niix || (apt-get update -q && apt-get install -y -q dcm2niix)); } || \
	  echo "dcm2niix not installed: the DICOM tests will fail (apt-get install dcm2niix)" >&2

test: $(STAMP) testdata
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) testdata
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check volprep tests benchmarks pipelines
	$(BIN)/mypy volprep

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

train: $(STAMP)
	test -f shards/demo/manifest.json || $(MAKE) shards
	$(BIN)/python pipelines/train_example.py shards/demo

clean:
	rm -rf shards .pytest_cache .mypy_cache .ruff_cache
