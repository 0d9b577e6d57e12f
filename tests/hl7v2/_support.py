"""Helpers shared by the HL7 v2 tests: message builders, the catalog, the samples."""

from __future__ import annotations

from pathlib import Path

from converter.hl7v2 import Message, StructureCatalog, parse_message

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"

#: One catalog for the whole run: it is immutable once loaded and slow to build.
CATALOG = StructureCatalog()


def msh(
    msh9: str = "ADT^A01^ADT_A01",
    *,
    version: str = "2.5",
    control_id: str = "CID-1",
    charset: str = "",
    sep: str = "|",
    msh2: str = "^~\\&",
) -> str:
    """An MSH segment with the given type, version, control id and MSH-18."""
    fields = [
        "MSH",
        msh2,
        "SENDAPP",
        "SENDFAC",
        "RECVAPP",
        "RECVFAC",
        "20240102030405",
        "",
        msh9,
        control_id,
        "P",
        version,
        "",
        "",
        "",
        "",
        "",
        charset,
    ]
    return sep.join(fields)


def build(*segments: str, **msh_args: str) -> bytes:
    """ER7 bytes (UTF-8, CR separators) of an MSH built by :func:`msh` plus ``segments``."""
    return "\r".join([msh(**msh_args), *segments]).encode("utf-8")


def parse(data: bytes, **kwargs: str) -> Message:
    return parse_message(data, CATALOG, **kwargs)


def parse_segments(*segments: str, **msh_args: str) -> Message:
    return parse(build(*segments, **msh_args))
