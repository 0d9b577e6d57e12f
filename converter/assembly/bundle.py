"""The transaction Bundle around a conversion's resources."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal
from urllib.parse import quote

from ..errors import BundleValidationError
from .confidentiality import label_compartments
from .periods import drop_reversed_period_ends

__all__ = ["REQUEST_MODES", "RequestMode", "build_bundle", "is_resource_type_name"]

RequestMode = Literal["put", "conditional-create", "conditional-update"]
REQUEST_MODES: tuple[RequestMode, ...] = ("put", "conditional-create", "conditional-update")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


def is_resource_type_name(text: str) -> bool:
    """Whether ``text`` is written as a FHIR resource type (``Patient``): the key of a
    per-type request mode, checked wherever one is given (API, CLI, configuration)."""
    return _RESOURCE_TYPE.fullmatch(text) is not None


def build_bundle(
    bundle_id: str,
    resources: Iterable[dict[str, Any]],
    *,
    mode: RequestMode,
    modes: Mapping[str, RequestMode] | None = None,
    timestamp: str | None = None,
    identifier: dict[str, str] | None = None,
    deleted: Collection[tuple[str, str]] = (),
    warnings: list[str] | None = None,
    periods: Collection[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A ``transaction`` Bundle; every entry has a request, and a ``urn:uuid`` fullUrl
    unless it is a DELETE.
    ``identifier`` names what the bundle was converted from (IG MSH[Bundle]: MSH-10).

    ``put``: ``PUT Type/id`` — the id is stable, so a re-sent message updates.
    Conditionally written resources carry no ``id`` (the server chooses or keeps it).
    ``conditional-create`` / ``conditional-update``: resources with an identifier are
    matched on it (``ifNoneExist`` / ``PUT Type?identifier=``); references then use the
    ``urn:uuid`` fullUrls that the server rewrites. Resources without an identifier fall
    back to ``PUT Type/id``. A Patient is matched on its first identifier (its record
    number, which its id derives from) or, when that has no system, written by id.

    ``modes`` overrides ``mode`` for some resource types (``{"Patient":
    "conditional-create"}``): in one bundle, some entries PUT by id and others written
    conditionally; references then use the ``urn:uuid`` fullUrls for all.

    Two resources of one type with the same identifier (a source that reuses an id for
    different entries) cannot both be written conditionally: the server could not tell
    them apart. That is a BundleValidationError here, rather than a refusal by the server
    after the message was acknowledged.

    ``deleted`` holds the ``(type, id)`` of resources whose entry is a DELETE (ADT^A29
    delete person, A23 delete visit): ``DELETE Type/id``, or in a conditional mode
    ``DELETE Type?identifier=…`` (the search its conditional write would use; ``Type/id``
    without an identifier). The entry has neither resource nor fullUrl: nothing in the
    bundle may refer to it (the render session checks that).

    A Period ending before it starts (FHIR R4 per-1) loses its ``end``, and ``warnings``
    gets one line naming the element (see :mod:`.periods`): a server validating
    invariants would refuse the whole transaction for it. ``periods``, when given, holds
    the ``(type, id)`` of the only resources that may hold such a Period (the render
    session knows which hold an object with both a start and an end): the others are not
    walked.

    A protected patient's confidentiality label (R, V) goes on every resource of the
    bundle in his compartment (see :mod:`.confidentiality`).
    """
    resources = list(resources)
    label_compartments(resources, deleted=deleted)
    drop_reversed_period_ends(
        (
            r
            for r in resources
            if (periods is None or (r["resourceType"], r["id"]) in periods)
            and (r["resourceType"], r["id"]) not in deleted
        )
        if deleted or periods is not None
        else resources,
        [] if warnings is None else warnings,
    )
    entries: list[dict[str, Any]] = []
    searched: dict[tuple[str, str], int] = {}
    for resource in resources:
        rtype = resource["resourceType"]
        rid = resource["id"]
        entry_mode = modes.get(rtype, mode) if modes else mode
        search = _identifier_search(resource) if entry_mode != "put" else None
        if search is not None:
            first = searched.setdefault((rtype, search), len(entries))
            if first != len(entries):
                where = f"Bundle.entry[{first}] and Bundle.entry[{len(entries)}]"
                raise BundleValidationError(
                    f"two {rtype} resources share the identifier of their conditional "
                    f"request ({where}); the source reuses an id for different entries",
                    location=where,
                )
        if deleted and (rtype, rid) in deleted:
            url = f"{rtype}/{rid}" if search is None else f"{rtype}?{search}"
            entries.append({"request": {"method": "DELETE", "url": url}})
            continue
        if search is None:
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
        else:
            # The server picks (or keeps) the id of a conditionally written resource; an
            # id in the body would have to match it, so it is left out.
            resource = {k: v for k, v in resource.items() if k != "id"}
            if entry_mode == "conditional-create":
                request = {"method": "POST", "url": rtype, "ifNoneExist": search}
                if warnings is not None and (
                    resource.get("link") or resource.get("active") is False
                ):
                    # A merge or link changes records the server holds; a conditional
                    # create leaves them as they are.
                    said = (
                        f"{rtype} written conditional-create: a stored record keeps its "
                        "links and status (this merge or link is not applied there)"
                    )
                    if said not in warnings:
                        warnings.append(said)
            else:
                request = {"method": "PUT", "url": f"{rtype}?{search}"}
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource, "request": request})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": bundle_id, "type": "transaction"}
    if identifier:
        bundle["identifier"] = identifier
    if timestamp:
        bundle["timestamp"] = timestamp
    bundle["entry"] = entries
    return bundle


#: Types whose first identifier is the one their identity (and id) comes from: the
#: templates list it first (hl7v2 Patient.j2 and PatientMerged.j2: PID-3's / MRG-1's MR,
#: else PI; cda Patient.j2: its key id, the first with a root that is no national
#: register's (INS, SSN), else the first, written first).
_IDENTITY_FIRST = frozenset({"Patient"})
#: Types whose identifiers several patients' resources share while their ids are per
#: patient: a Coverage's first identifier is its plan's (IN1-2), the same for every member;
#: a RelatedPerson's are the person's (PID-21 for twins' mother, NK1-33, a parent's
#: number on siblings' records). A conditional write matched one patient's resource and
#: gave it to the next: twins shared one mother whose `patient` was the second twin, two
#: members of a plan one Coverage. Written ``PUT Type/id`` in every mode.
_BY_ID_ONLY = frozenset({"Coverage", "RelatedPerson"})


def _identifier_search(resource: dict[str, Any]) -> str | None:
    """The ``identifier=system|value`` search a conditional request names ``resource``
    by: its first identifier with a system and a value; for a type of
    ``_IDENTITY_FIRST``, its first identifier only. None: write it by id (always for a
    type of ``_BY_ID_ONLY``)."""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list) or resource.get("resourceType") in _BY_ID_ONLY:
        return None
    if resource.get("resourceType") in _IDENTITY_FIRST:
        # A record number without a system (a namespace the code maps do not know: the
        # id is scoped by it) made the search fall to the next identifier, usually the
        # INS or SSN every hospital's record of the person holds: hospital B's record
        # then replaced hospital A's on the server (and B's A29 deleted A's). The id,
        # derived from the scoped number, names this record only.
        identifiers = identifiers[:1]
    for identifier in identifiers:
        system, value = identifier.get("system"), identifier.get("value")
        if system and value:
            system, value = _search_escaped(system), _search_escaped(value)
            return f"identifier={quote(system, safe=':/.')}|{quote(value, safe='')}"
    return None


def _search_escaped(text: str) -> str:
    """FHIR search escaping: ``,`` (or), ``|`` (system|code) and ``$`` (composite) are
    separators, so inside a value they and ``\\`` itself take a backslash. Unescaped, an
    identifier ``123,456`` would match a patient ``123`` or ``456`` instead of its own."""
    if not any(char in text for char in "\\|,$"):
        return text
    return text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
