"""Identity filters: the system of an HL7 assigning authority (HD) and of a CDA II root,
and the scope a sending facility gives the identifiers it sends without an authority.

``hd_system`` and ``facility_scope`` are what identities (``_identity``) are made of;
``identifier_system`` is for Identifier.system only (it reads the FHIR identifier
registry, which identities must not depend on)."""

from __future__ import annotations

import re
from typing import Any

from .filter_base import FilterBase, remember, text_of

__all__ = ["OID", "IdentityFilters", "as_uri"]

#: An ISO object identifier (no leading zeros in its arcs).
OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+", re.ASCII)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_URN_OID = "urn:oid:"
_URN_UUID = "urn:uuid:"
# A character str.isspace() calls whitespace: \s of a str pattern is the same test
# (Py_UNICODE_ISSPACE), run in C instead of a generator step per character.
_BLANK = re.compile(r"\s")

#: Where a namespace-only HD finds its universal id, the site's map first.
_NAMESPACE_MAPS = ("AssigningAuthority", "AssigningAuthorityOid")


class IdentityFilters(FilterBase):
    """``hd_system``, ``identifier_system`` and the sending facility's scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: hd_system's answers by (namespace, universal id, type).
        self._hd_systems: dict[tuple[str, str, str], str | None] = {}
        #: identifier_system's answers by root: a document names a few authorities many
        #: times.
        self._identifier_systems: dict[str, str | None] = {}

    def identifier_system(self, root: Any) -> str | None:
        """Identifier.system of a CDA II root, or of a system ``hd_system`` gave (HL7 v2):
        a registry's FHIR URI when the OID is in the FHIR identifier registry
        (codemaps/IdentifierSystemOid.csv: SSN, NPI…; IG CX[Identifier] CX.4), else the
        OID or UUID as a URN and any other URI as given.

        Identifier.system only: a v2 ``_identity`` keeps ``hd_system``'s value, so that
        ids do not move when the map gains a registry URI."""
        text = text_of(root)
        if not text:
            return None
        if text in self._identifier_systems:
            return self._identifier_systems[text]
        oid = text[len(_URN_OID) :] if text[: len(_URN_OID)].lower() == _URN_OID else text
        mapped = (
            self._codemaps.lookup("IdentifierSystemOid", oid)
            if "IdentifierSystemOid" in self._codemaps
            else None
        )
        return remember(
            self._identifier_systems, text, mapped.code if mapped is not None else as_uri(text)
        )

    def hd_system(self, hd: Any, start: int = 1, type_code: Any = None) -> str | None:
        """Identifier system from an HD (CX.4) or the HD part of an EI (``start=2``).

        The universal id (HD.2) when there is one: OID → urn:oid, UUID → urn:uuid, URI
        kept. A namespace alone (HD.1) is a name: a site's ``AssigningAuthority`` code map
        (none is shipped) and then the built-in ``AssigningAuthorityOid`` (national
        registries: ASIP-SANTE-PS → 1.2.250.1.71.4.2.1…) give the universal id it stands
        for, so that ``ASIP-SANTE-PS`` and ``ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO`` are one
        system and one identity (the IG's CX[Identifier] looks CX.4 up in the identifier
        registry for the same reason). A site's row with an empty target keeps that
        namespace a local name. An HD.2 always wins over its namespace's alias.

        ``type_code`` (a patient's CX.5): with the HD empty, a type that is one of FR
        Core's INS identifier types (INS-NIR, INS-NIA, INS-NIR-TEST, INS-NIR-DEMO) names
        its register (the alias its code has, an OID ``InsIdentifierType`` lists): one INS
        register per code, so ``…^^^^INS-NIR`` is the INS that the full CX.4 names. Any
        other type (``INS``, which PAM France gives NIR and NIA alike, ``NH``…) names no
        system.
        """
        if hd is None:
            namespace, universal, kind = "", "", ""
        elif isinstance(hd, str):
            namespace, universal, kind = hd.strip(), "", ""
        else:
            namespace = text_of(hd[start])
            universal = text_of(hd[start + 1])
            kind = text_of(hd[start + 2]).upper()
        if not (namespace or universal or kind):
            # An empty HD (``&1.2…&ISO`` is not: its namespace alone is empty).
            code = text_of(type_code)
            return self._ins_register(code) if code else None
        # The same authority comes in almost every identifier of a message, and its system
        # depends on nothing but its text and the (immutable) code maps: worked out once.
        key = (namespace, universal, kind)
        systems = self._hd_systems
        try:
            return systems[key]
        except KeyError:
            pass
        return remember(systems, key, self._hd_system(namespace, universal, kind))

    def _hd_system(self, namespace: str, universal: str, kind: str) -> str | None:
        """:meth:`hd_system` of a non-empty HD's namespace, universal id and type."""
        if universal:
            return _universal_system(universal, kind)
        if not namespace:
            return None
        alias = self._namespace_alias(namespace)
        if alias:
            return _universal_system(alias, "")
        # An OID written as the namespace, bare or as its URN (``urn:oid:1.2.250…``): the
        # authority of ``&1.2.250…&ISO``, one system and one identity (the URN was no
        # system, the identifier went without one).
        bare = _without_urn(namespace)
        if OID.fullmatch(bare):
            return f"urn:oid:{bare}"
        return None

    def facility_scope(self, hd: Any) -> str:
        """What scopes the identifiers a sending facility (MSH-4) gives without an
        authority: its universal id (HD.2) as written when valued, else the universal id
        its namespace stands for in the ``AssigningAuthority`` maps (as ``hd_system`` reads
        a CX.4), else MSH-4 as written: ``CHU-LYON`` and ``CHU-LYON^1.2.250.1.999.1.1^ISO``
        are one scope when a map names CHU-LYON's OID."""
        if hd is None:
            return ""
        if isinstance(hd, str):
            namespace, universal = hd.strip(), ""
        else:
            namespace, universal = text_of(hd[1]), text_of(hd[2])
        # As an HD.2 is written (a bare OID or UUID), whatever form the sender or the map's
        # row gives it: ``^urn:oid:1.2.250…^ISO`` is the facility ``^1.2.250…^ISO`` names.
        if universal:
            return _without_urn(universal)
        alias = self._namespace_alias(namespace) if namespace else None
        if alias:
            return _without_urn(alias)
        if OID.fullmatch(_without_urn(namespace)):
            return _without_urn(namespace)
        return str(hd)

    def _ins_register(self, type_code: str) -> str | None:
        """``urn:oid:`` of the INS register an FR Core INS identifier type names, if any."""
        alias = self._namespace_alias(type_code)
        oid = _without_urn(alias) if alias else ""
        if not OID.fullmatch(oid) or "InsIdentifierType" not in self._codemaps:
            return None
        if self._codemaps.lookup("InsIdentifierType", oid) is None:
            return None
        return f"urn:oid:{oid}"

    def _namespace_alias(self, namespace: str) -> str | None:
        """The universal id (or system URI) a namespace stands for, from the site's
        ``AssigningAuthority`` map, else the built-in ``AssigningAuthorityOid``."""
        for name in _NAMESPACE_MAPS:
            if name not in self._codemaps:
                continue
            mapped = self._codemaps.lookup(name, namespace)
            if mapped is not None:
                return mapped.code
            if self._codemaps.knows(name, namespace):
                # A row without target keeps the namespace a local name; in the site's
                # map it also hides the built-in alias.
                return None
        return None


def _universal_system(universal: str, kind: str) -> str | None:
    """System of an HD universal id (HD.2) of type ``kind`` (HD.3, upper case or "")."""
    # ``URN:OID:1.2…`` and ``urn:oid:1.2…`` are the OID ``1.2…``: one system whatever the case.
    universal = _without_urn(universal)
    if kind == "ISO" or (not kind and OID.fullmatch(universal)):
        # HD.3 says ISO but HD.2 is no OID: kept like any other name, if it can be.
        return f"urn:oid:{universal}" if OID.fullmatch(universal) else as_uri(universal)
    if kind == "UUID" or _UUID.fullmatch(universal):
        return f"urn:uuid:{universal.lower()}"
    return as_uri(universal)


def _without_urn(text: str) -> str:
    """An OID or UUID without its ``urn:oid:`` / ``urn:uuid:`` prefix (any case); any other
    text as given."""
    for urn, shape in ((_URN_OID, OID), (_URN_UUID, _UUID)):
        if text[: len(urn)].lower() == urn and shape.fullmatch(text[len(urn) :]):
            return text[len(urn) :]
    return text


def as_uri(text: str) -> str | None:
    """OIDs and UUIDs as URNs; any other name kept as written when it has no blanks.

    A local name (``99LAB``) is not a proper URI, but dropping it would lose where the
    code comes from; FHIR's uri type accepts it, and a deployment can map it to a real
    URI in the ``CodingSystem`` code map.
    """
    if OID.fullmatch(text):
        return f"urn:oid:{text}"
    if _UUID.fullmatch(text):
        return f"urn:uuid:{text.lower()}"
    if _BLANK.search(text) is None:
        return text
    return None
