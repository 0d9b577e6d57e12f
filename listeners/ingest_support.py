"""Whether a route converts a message, decided from its header alone.

Shared by the MLLP ingestion (:mod:`.ingest`) and the AMQP intake
(:mod:`.amqp.intake`), so both refuse the same messages, with the same HL7 error codes,
as the converter itself would.
"""

from __future__ import annotations

from collections.abc import Mapping

from converter import UnsupportedMessageError
from converter.hl7v2 import Header
from converter.hl7v2.structure import StructureCatalog
from converter.templates.routes import RouteTable

from .config import RouteConfig

__all__ = ["SupportChecker"]


class SupportChecker:
    """Whether a route's converter has a root template for a message, without converting.

    Uses the same route tables and version catalogs as the converter, so the listener's
    AR and the converter's UnsupportedMessageError always agree.
    """

    def __init__(self, routes: Mapping[str, RouteConfig]) -> None:
        self._catalog = StructureCatalog()
        self._tables: dict[str, RouteTable] = {}
        self._processing_ids = {name: route.processing_ids for name, route in routes.items()}
        for name, route in routes.items():
            config = route.converter.converter_config()
            self._tables[name] = RouteTable.load(
                "hl7v2", (*config.template_dirs, config.mappings_dir)
            )

    def event_types(self) -> set[str]:
        """The events some route converts (``ADT^A01``…), for the metrics' labels."""
        return {key for table in self._tables.values() for key in table.events}

    def check(self, route: str, header: Header) -> None:
        """Raise UnsupportedMessageError (HL7 error 200/201/203) when not convertible, or
        (202) when the route does not take the message's processing id (MSH-11)."""
        accepted = self._processing_ids.get(route, ())
        if accepted and header.processing_id not in accepted:
            # A training or debugging message reaching a production route would land in
            # the production FHIR server as real patient data.
            raise UnsupportedMessageError(
                f"processing id {header.processing_id or '(empty)'!r} not accepted by route "
                f"{route!r} (accepts {', '.join(accepted)})",
                location="MSH-11",
                control_id=header.control_id or None,
                message_type=header.message_type or None,
                hl7_error_code="202",
            )
        catalog = self._catalog.version(header.version)
        structure = catalog.structure_for(header.structure, header.event) or header.event.replace(
            "^", "_"
        )
        self._tables[route].resolve(header.event, structure)
