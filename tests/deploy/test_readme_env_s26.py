"""The README's environment variables are the ones the service reads, and all of them.

A variable the README names but the service does not know is only a start-up WARNING:
the setting silently keeps its default (bundles to the local folder instead of the FHIR
server). The README says "only the settings above have a variable", so a variable the
service reads that the README never names is a discrepancy too. Names come from
:data:`listeners.config.environment.ENV_SETTINGS`, the table the service applies.
"""

from __future__ import annotations

import re
from pathlib import Path

from listeners.config.environment import ENV_SETTINGS

README = Path(__file__).resolve().parents[2] / "README.md"

#: Named on purpose as a variable the service does not know (the typo example).
_TYPO_EXAMPLES = {"PASSERELLE_FHIR_URI"}
#: The test suite's own switches (Makefile), not the service's.
_TEST_SWITCHES = re.compile(r"PASSERELLE_REQUIRE_[A-Z0-9_]+")
#: Read by the package's build (setup.py: the compiled build), never by the service.
_BUILD_SWITCHES = {"PASSERELLE_COMPILE"}
#: A full name, or the README's short form ``…_SUFFIX`` for "the previous name's prefix".
_NAME = re.compile(r"(PASSERELLE_[A-Z0-9_]*[A-Z0-9])|…(_[A-Z0-9_]*[A-Z0-9])")


def _readme_names() -> list[tuple[int, str]]:
    """(line, variable) for each variable a README code span names, short forms expanded.

    ``PASSERELLE_FHIR_AUTH``, ``…_USERNAME``: the short form stands for the longest
    prefix of the previous full name in the paragraph (a list goes on across line
    breaks) that gives a known variable; when none does, it expands with the previous
    name's first two words, which then fails below.
    """
    names = []
    previous = ""
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            previous = ""
        for span in re.findall(r"`([^`\n]+)`", line):
            for match in _NAME.finditer(span):
                if match.group(1):
                    previous = match.group(1)
                    names.append((number, previous))
                    continue
                if not previous:
                    continue
                words = previous.split("_")
                candidates = [
                    "_".join(words[:cut]) + match.group(2) for cut in range(1, len(words))
                ]
                known = [name for name in reversed(candidates) if name in ENV_SETTINGS]
                names.append(
                    (number, known[0] if known else candidates[min(1, len(candidates) - 1)])
                )
    return names


def test_the_readme_names_variables() -> None:
    assert len({name for _, name in _readme_names()}) >= 40


def test_every_variable_the_readme_names_is_read_by_the_service() -> None:
    unknown = [
        f"README.md:{line}: {name} is not in ENV_SETTINGS"
        for line, name in _readme_names()
        if name not in ENV_SETTINGS
        and name not in _TYPO_EXAMPLES
        and name not in _BUILD_SWITCHES
        and not _TEST_SWITCHES.fullmatch(name)
    ]
    assert not unknown, "\n".join(unknown)


def test_every_variable_the_service_reads_is_in_the_readme() -> None:
    named = {name for _, name in _readme_names()}
    missing = [f"{name} ({ENV_SETTINGS[name]})" for name in ENV_SETTINGS if name not in named]
    assert not missing, "not in the README: " + ", ".join(missing)
