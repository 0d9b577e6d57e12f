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

.PHONY: run test test-compiled lint bench constraints clean

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
	$(MAKE) --no-print-directory test-compiled

# The container runs the converter's hot modules compiled with mypyc (pyproject.toml,
# [tool.passerelle.compile]). These tests run again against that build, in a copy of the
# tree where scripts/build_compiled.py built them; tests/test_compiled_build.py fails
# there if any listed module was imported uncompiled.
COMPILED := build/compiled
# The converter's tests, and those of the service's conversion processes and of the CLI
# (PYTHONPATH: the processes they start import the compiled copy too).
COMPILED_TESTS := tests/test_compiled_build.py tests/test_convert.py tests/test_datetimes.py \
	tests/hl7v2 tests/cda tests/templates tests/mappings tests/assembly tests/validation \
	tests/golden tests/corpus tests/test_cli.py tests/test_cli_convert_s26.py \
	tests/listeners/test_conversion_turns_s24.py tests/listeners/test_poison_s24.py \
	tests/listeners/test_memory_errors_s25.py tests/listeners/service/test_converter_bugs.py \
	tests/listeners/service/test_conversion_timeout.py tests/listeners/service/test_service_e2e.py

test-compiled: $(STAMP) $(NODE_STAMP)
	$(BIN)/python scripts/build_compiled.py $(COMPILED)
	cd $(COMPILED) && PASSERELLE_EXPECT_COMPILED=1 PASSERELLE_REQUIRE_R4VALIDATOR=1 \
		PASSERELLE_REQUIRE_FHIRSERVER=1 PASSERELLE_SHARED_DIR=$(CURDIR)/../shared \
		PYTHONPATH=$(CURDIR)/$(COMPILED) \
		$(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider $(COMPILED_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check setup.py $(wildcard converter listeners tests scripts)
	$(BIN)/ruff format --check setup.py $(wildcard converter listeners tests scripts)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py
	$(BIN)/python scripts/build_compiled.py $(COMPILED)
	cd $(COMPILED) && PYTHONPATH=$(CURDIR)/$(COMPILED) $(CURDIR)/$(BIN)/python scripts/benchmark.py

# Pins every installed distribution (runtime and test tools) to its installed version:
# after upgrading one in .venv, run this, then make test.
constraints: $(STAMP)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) out build tests/r4validator/node_modules
