# singexp: `make run` runs the main job on the embedded default, `make test` runs the tests.
# Both create the virtual environment (.venv) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format docs docs-tables sync-wandb clean embedded-weights embedded-jscc embedded-prior embedded-inn embedded-inn-light

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install singexp with its dev tools

run: install ## the main job on the embedded default (ARGS="..." adds Hydra overrides)
	$(PY) -m singexp +experiment=sing_inn $(ARGS)

test: install ## the whole test suite
	$(PY) -m pytest $(ARGS)

test-fast: install ## tests without the slow end-to-end runs
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: install ## ruff lint and format check, mypy type check (files: pyproject's [tool.mypy])
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools
	$(VENV)/bin/mypy

format: install ## ruff format and autofix
	$(VENV)/bin/ruff format src tests tools
	$(VENV)/bin/ruff check --fix src tests tools

docs: install ## build the documentation site (mkdocs build --strict)
	$(VENV)/bin/mkdocs build --strict --site-dir site

docs-tables: install ## regenerate the results tables of README.md and docs/ (tools/doc_tables.py)
	$(PY) tools/doc_tables.py

sync-wandb: install ## upload offline W&B runs under outputs/
	find $${SINGEXP_OUTPUT:-outputs} -type d -name 'offline-run-*' -exec $(VENV)/bin/wandb sync {} +

EMBEDDED_JSCC := src/singexp/assets/jscc_shapes32
# the embedded grid (k = 32, 64, 128 symbols: docs/guide/configs.md "Operating points") and the paper's ratios
EMBEDDED_BCRS ?= 1_96 1_48 1_24 1_768 1_384 1_192

embedded-jscc: install ## retrain the shipped DeepJSCC codecs (32 px shapes, every BCR of EMBEDDED_BCRS)
	for r in $(EMBEDDED_BCRS); do \
	  OMP_NUM_THREADS=1 $(PY) -m singexp +experiment=embedded_jscc bcr=$$r print_config=false \
	    jscc.export=$(EMBEDDED_JSCC)/jscc_$$r.safetensors hydra.run.dir=outputs/embedded/jscc_$$r \
	    || exit 1; \
	done

EMBEDDED_PRIOR_STEPS ?= 2400

embedded-prior: install ## retrain the shipped 32 px shapes diffusion prior (about an hour on 2 CPU cores)
	OMP_NUM_THREADS=1 $(PY) -m singexp +experiment=train_prior print_config=false \
	  prior.max_steps=$(EMBEDDED_PRIOR_STEPS) export_to=src/singexp/assets/prior_shapes32 \
	  hydra.run.dir=outputs/embedded/prior

embedded-inn: install ## retrain the shipped SING-INN networks, one per BCR, on the shipped codecs
	for r in $(EMBEDDED_BCRS); do \
	  OMP_NUM_THREADS=1 $(PY) -m singexp +experiment=embedded_inn bcr=$$r print_config=false \
	    inn.export=src/singexp/assets/inn_shapes32/inn_$$r.safetensors \
	    hydra.run.dir=outputs/embedded/inn_$$r || exit 1; \
	done

# the lighter INN (inn=light: width 16, 2 pairs) is shipped for the embedded grid only
EMBEDDED_LIGHT_BCRS ?= 1_96 1_48 1_24

embedded-inn-light: install ## retrain the shipped light SING-INN networks (inn=light), one per embedded BCR
	for r in $(EMBEDDED_LIGHT_BCRS); do \
	  OMP_NUM_THREADS=1 $(PY) -m singexp +experiment=embedded_inn inn=light bcr=$$r print_config=false \
	    inn.export=src/singexp/assets/inn_shapes32/inn_$${r}_w16p2.safetensors \
	    hydra.run.dir=outputs/embedded/inn_$${r}_w16p2 || exit 1; \
	done

embedded-weights: embedded-jscc embedded-prior embedded-inn embedded-inn-light ## retrain every shipped weight of the embedded default

clean: ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun lightning_logs wandb site .pytest_cache .ruff_cache
