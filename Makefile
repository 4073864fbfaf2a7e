# The two commands the README promises: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck check bench clean

$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test $(VENV)/mediad-alone/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# The mediad the benchmarks run: this tree installed with its own dependencies alone, as a user's
# is (benchmarks/harness/programs.py says why).
$(VENV)/mediad-alone/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)/mediad-alone
	$(VENV)/mediad-alone/bin/pip install --quiet -e .
	touch $@

## run: the daemon on the embedded default (PostgreSQL and media under var/), readable logs
run: $(VENV)/.installed-run
	MEDIAD_LOG_FORMAT=$${MEDIAD_LOG_FORMAT:-console} $(BIN)/mediad run

## test: the whole suite against real services the tests start themselves (Debian's nginx,
## for the tests that serve deploy/nginx-media.conf, and Debian's chromium, which loads the
## dashboard, are installed when missing)
test: $(VENV)/.installed-test
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light)
	@command -v chromium >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(BIN)/pytest

## lint: ruff (style and bugs) and mypy --strict
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict

check: lint test

## bench: every benchmark in benchmarks/, printing its figures against its peer
bench: $(VENV)/.installed-bench
	for script in benchmarks/[a-z]*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
