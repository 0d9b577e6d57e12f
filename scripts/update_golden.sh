#!/usr/bin/env bash
# Regenerate the golden outputs of tests/golden (samples/hl7v2/expected) with the
# configuration the tests use. Review the diff before committing it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -f samples/hl7v2/expected/*.json
mkdir -p samples/hl7v2/expected
.venv/bin/passerelle convert samples/hl7v2 --out samples/hl7v2/expected --pretty \
    --timezone Europe/Paris
