#!/usr/bin/env python3
"""Write converter/hl7v2/data/group_names.txt: every segment group name (short form,
``PATIENT_RESULT``) that some supported HL7 v2 version defines, from hl7apy's tables.

Templates use these names (``msg.find("ORDER_OBSERVATION")``); a name in no version is a
template typo and fails the conversion instead of silently finding nothing.

    .venv/bin/python scripts/make_group_names.py
"""

from __future__ import annotations

from pathlib import Path

from converter.hl7v2.structure import supported_group_names

TARGET = Path(__file__).resolve().parents[1] / "converter" / "hl7v2" / "data" / "group_names.txt"


def main() -> None:
    names = supported_group_names()
    header = "# Segment group names defined by HL7 v2.3 to 2.8.2 (scripts/make_group_names.py)\n"
    TARGET.write_text(header + "".join(f"{name}\n" for name in sorted(names)))
    print(f"{len(names)} group names written to {TARGET}")


if __name__ == "__main__":
    main()
