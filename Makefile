# The two commands of the README:
#   make run    starts the service with the embedded defaults (MLLP 2575, HTTP 8080, ./var)
#   make test   runs the whole test suite, starting the real services the tests use
# Both set up what they need on a fresh machine: a virtualenv in .venv and the Node
# packages of the test tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/r4validator/node_modules/.installed

.PHONY: run test lint bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(NODE_STAMP): tests/r4validator/package-lock.json tests/fhirserver/package-lock.json
	.ci/install-npm.sh
	touch $(NODE_STAMP)

run: $(STAMP)
	$(BIN)/passerelle serve

test: $(STAMP) $(NODE_STAMP)
	PASSERELLE_REQUIRE_R4VALIDATOR=1 PASSERELLE_REQUIRE_FHIRSERVER=1 \
		PASSERELLE_REQUIRE_RABBITMQ=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard converter listeners tests scripts)
	$(BIN)/ruff format --check $(wildcard converter listeners tests scripts)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py

# Pins every installed distribution (runtime and test tools) to its installed version:
# after upgrading one in .venv, run this, then make test.
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) out tests/r4validator/node_modules
