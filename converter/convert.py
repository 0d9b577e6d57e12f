"""The converter: bytes in, FHIR R4 transaction Bundles out.

Pure library code: no network, no environment variables; everything it needs comes
from the :class:`ConverterConfig` built by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .assembly import json_text
from .assembly.bundle import REQUEST_MODES, RequestMode, build_bundle, is_resource_type_name
from .assembly.ids import stable_id
from .cda import CdaDocument, PathCache, SectionTable
from .cda.xml import DEFAULT_MAX_BYTES
from .datetimes import InvalidTimestamp, TimestampConverter
from .errors import ConfigurationError, ConversionError, ParseError
from .hl7v2.charset import charset_codec
from .hl7v2.digest import message_digest
from .hl7v2.er7 import RawMessage, parse_message, split_messages
from .hl7v2.message import Message
from .hl7v2.strict import validate_strictly
from .hl7v2.structure import StructureCatalog
from .templates.codemaps import CodeMaps
from .templates.environment import TemplateSet
from .templates.filters import ValueFilters
from .templates.json_output import is_fhir_string
from .templates.render import RenderSession
from .templates.routes import RouteTable
from .validation import ModelValidator, StructuralValidator

__all__ = ["Conversion", "Converter", "ConverterConfig", "InputType", "detect_input_type"]

InputType = Literal["auto", "hl7v2", "cda"]


def _builtin_mappings() -> Path:
    return Path(str(resources.files("mappings")))


@dataclass(frozen=True)
class ConverterConfig:
    """Everything that shapes a conversion; build it once at the edge."""

    #: Directories searched before the built-in mappings (templates, routes, code maps).
    template_dirs: tuple[Path, ...] = ()
    #: Validate every bundle against the FHIR structures (fhir.resources, R4B models).
    validate: bool = True
    #: "structural": the rules of fhir.resources' R4B models compiled into a fast checker
    #: (default; same verdicts, ~15x faster), plus R4's anchored patterns for codes and
    #: uris and R4's JSON types; "models": pydantic validation of the models only.
    validator: Literal["structural", "models"] = "structural"
    #: IANA zone for timestamps that carry a time but no offset.
    default_timezone: str = "UTC"
    #: Character set of messages whose MSH-18 is empty.
    default_charset: str = "utf-8"
    #: How bundle entries are written: PUT with stable ids, or conditional on identifiers.
    request_mode: RequestMode = "put"
    #: ``(resource type, mode)`` pairs overriding ``request_mode`` for those types: a
    #: result feed writing Patient and Encounter ``conditional-create`` never replaces
    #: what the admission feed stored (see :func:`build_bundle`).
    request_modes: tuple[tuple[str, RequestMode], ...] = ()
    #: Invalid values (dates, numbers) fail the message; False drops them with a warning.
    strict_values: bool = True
    #: Mixed into every id: two deployments (or senders) with different namespaces never
    #: produce the same ids.
    id_namespace: str = ""
    #: Refuse messages that break their version's definition (hl7apy, slow: off).
    strict_hl7: bool = False
    #: Larger CDA documents are refused before parsing (a ParseError).
    max_document_bytes: int = DEFAULT_MAX_BYTES
    #: Where the built-in mappings are; the package's own by default.
    mappings_dir: Path = field(default_factory=_builtin_mappings)
    #: Reuse, within one conversion, a rendering of a template emitted again with the
    #: same inputs (the output is byte-identical either way; off renders every emit).
    reuse_renderings: bool = True
    #: A directory private to the caller where compiled templates are kept for later
    #: processes (the first message of a type then loads them instead of compiling them,
    #: ~2 s); created 0700 if absent, refused if other users may enter it. None: each
    #: process compiles the templates it uses.
    template_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for mode in (self.request_mode, *(mode for _, mode in self.request_modes)):
            if mode not in REQUEST_MODES:
                raise ConfigurationError(f"unknown request mode {mode!r}")
        for resource_type, _ in self.request_modes:
            if not is_resource_type_name(resource_type):
                raise ConfigurationError(
                    f"request_modes: {resource_type[:100]!r} is not a FHIR resource type name"
                )
        if self.validator not in ("structural", "models"):
            raise ConfigurationError(f"unknown validator {self.validator!r}")
        if self.max_document_bytes < 1:
            raise ConfigurationError("max_document_bytes must be positive")
        try:
            codec = charset_codec(self.default_charset)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"default_charset: {exc}: {self.default_charset[:100]!r}"
            ) from None
        # The parser uses it as a codec name (8859/1 → iso8859-1).
        object.__setattr__(self, "default_charset", codec)

    @property
    def all_put(self) -> bool:
        """Every entry is ``PUT Type/id``: references can name ``Type/id``."""
        return self.request_mode == "put" and all(m == "put" for _, m in self.request_modes)


@dataclass(frozen=True)
class Conversion:
    """One message converted."""

    bundle: dict[str, Any]
    message_type: str
    control_id: str | None
    root_template: str
    sender: str
    index: int = 1
    warnings: tuple[str, ...] = ()

    def to_json(self, *, pretty: bool = False) -> str:
        """The bundle's JSON text; decimals keep their digits (``json.dumps`` can't)."""
        if pretty:
            return json_text.dumps(self.bundle, pretty=True)
        return json_text.compact_bundle(self.bundle)


def _offset_of(timestamp: str) -> str | None:
    text = timestamp.strip()
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        return text[-5:]
    return None


_UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def detect_input_type(data: bytes) -> Literal["hl7v2", "cda"]:
    """HL7 v2 when the data opens with a segment, CDA when it opens with XML (behind a
    UTF-8 or UTF-16 byte order mark too: the XML parser reads either)."""
    utf16 = _UTF16_BOMS.get(data[:2])
    if utf16 is not None:
        text = data[2:514].decode(utf16, errors="ignore").lstrip(" \t\r\n")
        if text.startswith("<"):
            return "cda"
        if text.startswith(("MSH", "FHS", "BHS")):
            # Delimiters cannot be found in UTF-16 bytes (see hl7v2/charset.py).
            raise ParseError("HL7 v2 in UTF-16 is not supported (UTF-8 or an 8-bit charset)")
        raise ParseError("input is neither HL7 v2 (MSH/FHS/BHS) nor XML")
    head = data[:512].lstrip(b"\xef\xbb\xbf\x0b \t\r\n")
    if head.startswith((b"MSH", b"FHS", b"BHS")):
        return "hl7v2"
    if head.startswith(b"<"):
        return "cda"
    raise ParseError("input is neither HL7 v2 (MSH/FHS/BHS) nor XML")


class Converter:
    """Converts HL7 v2 messages (and CDA documents) with one configuration.

    Construction loads templates, code maps and routes once; :meth:`convert_message` is
    then safe to call from several threads.
    """

    def __init__(self, config: ConverterConfig | None = None) -> None:
        self.config = config = config or ConverterConfig()
        search = (*config.template_dirs, config.mappings_dir)
        self.codemaps = CodeMaps.load([d / "codemaps" for d in search if (d / "codemaps").is_dir()])
        self.timestamps = TimestampConverter(config.default_timezone)
        self._filters = filters = ValueFilters(
            self.timestamps, self.codemaps, strict=config.strict_values
        )
        self.templates = TemplateSet(
            config.mappings_dir, config.template_dirs, filters, cache_dir=config.template_cache_dir
        )
        self.routes = RouteTable.load("hl7v2", search)
        self.cda_routes = RouteTable.load("cda", search)
        for table in (self.routes, self.cda_routes):
            table.check_templates(self.templates.exists)
        self.cda_sections = SectionTable.load(search)
        self.catalog = StructureCatalog()
        self._paths = PathCache()
        self._validator: ModelValidator | StructuralValidator | None = None
        if config.validate:
            self._validator = (
                StructuralValidator() if config.validator == "structural" else ModelValidator()
            )

    # -- HL7 v2 ----------------------------------------------------------------------------
    def split(self, data: bytes) -> list[RawMessage]:
        """Cut a file or stream into messages (batches and multi-message files)."""
        return split_messages(data)

    def parse(self, data: bytes) -> Message:
        """Parse one HL7 v2 message without converting it.

        Its :attr:`Message.facility_scope` is the one the conversion scopes identifiers
        by: the code maps know which universal id a namespace alone stands for
        (CHU-LYON and CHU-LYON^1.2.250…^ISO: one scope). Without MSH-4, the sending
        application (MSH-3) is the scope, read the same way: scoped by "", doctor 123 of
        one sender's LIS and doctor 123 of another's RIS were one Practitioner, the
        second's name overwriting the first's; and an MSH-4 of blanks was such an empty
        scope, which merged the local patient numbers of every sender padding it."""
        message = parse_message(data, self.catalog, default_charset=self.config.default_charset)
        scope = self._filters.facility_scope
        message.facility_scope = scope(message.MSH[4]).strip() or scope(message.MSH[3]).strip()
        return message

    def convert_message(
        self, data: bytes, *, root_template: str | None = None, index: int = 1
    ) -> Conversion:
        """Convert one HL7 v2 message into a transaction Bundle.

        ``data`` is one message as :meth:`split` cuts it (:attr:`RawMessage.source`): CR
        segment separators, no framing, a UTF-8 byte order mark only when the message had
        one (it is then read as UTF-8). Files and streams go through :meth:`convert`.
        """
        message = self.parse(data)
        if self.config.strict_hl7:
            text = data.decode(message.codec).removeprefix("\ufeff")
            validate_strictly(text, message.control_id or None)
        try:
            return self._convert_parsed(message, root_template, index, message_digest(data))
        except ConversionError as exc:
            raise exc.with_context(
                control_id=message.control_id or None, message_type=message.event
            ) from None

    def convert(
        self, data: bytes, *, input_type: InputType = "auto", root_template: str | None = None
    ) -> list[Conversion]:
        """Convert every message in ``data``; the first failure raises."""
        return list(self.iter_convert(data, input_type=input_type, root_template=root_template))

    def iter_convert(
        self, data: bytes, *, input_type: InputType = "auto", root_template: str | None = None
    ) -> Iterator[Conversion]:
        kind = detect_input_type(data) if input_type == "auto" else input_type
        if kind == "cda":
            yield self.convert_document(data, root_template=root_template)
            return
        for raw in self.split(data):
            yield self.convert_message(raw.source, root_template=root_template, index=raw.index)

    # -- CDA -----------------------------------------------------------------------------
    def convert_document(self, data: bytes, *, root_template: str | None = None) -> Conversion:
        """Convert one CDA / C-CDA document into a transaction Bundle."""
        document = CdaDocument(data, self._paths, max_bytes=self.config.max_document_bytes)
        try:
            return self._convert_document(document, root_template)
        except ConversionError as exc:
            raise exc.with_context(
                control_id=document.control_id,
                message_type=document.document_type,
                control_id_label="document",
            ) from None
        finally:
            # Nodes and their document refer to each other: without this, every converted
            # document waits for a full collection (~30 ms of a CCD's ~150 ms).
            document.release()

    def _convert_document(self, document: CdaDocument, root_template: str | None) -> Conversion:
        if root_template:
            root = self._forced_root("cda/documents", root_template)
        else:
            route = self.cda_routes.resolve_document(document.template_ids)
            root = f"cda/documents/{route.template}.j2"
        sections = self.cda_sections

        def section_template(section: object) -> str | None:
            code = getattr(section, "code", None)
            name = sections.template_for(
                getattr(section, "template_ids", []), code["code"] if code is not None else ""
            )
            return f"sections/{name}" if name else None

        message_key = "\x1f".join(("cda", document.control_id))
        session = self._session(
            "cda",
            {
                "doc": document.root,
                "document": document,
                "message_key": message_key,
                "section_template": section_template,
            },
        )
        effective = document.root.effectiveTime["value"]
        # C-CDA on FHIR: a timestamp without an offset takes the document's own offset.
        session.default_offset = _offset_of(effective)
        session.render(root, {})
        return self._finish(
            session,
            message_key,
            effective,
            root,
            message_type=document.document_type,
            control_id=document.control_id,
            sender="",
            index=1,
        )

    def route_for(self, message: Message, root_template: str | None = None) -> str:
        """The root template a message goes through (``--template`` forces one)."""
        if root_template:
            return self._forced_root("hl7v2/messages", root_template)
        route = self.routes.resolve(message.event, message.structure)
        return f"hl7v2/messages/{route.template}.j2"

    def _forced_root(self, folder: str, root_template: str) -> str:
        name = root_template if root_template.endswith(".j2") else f"{folder}/{root_template}.j2"
        if not self.templates.exists(name):
            raise ConfigurationError(f"root template {name} not found")
        return name

    def _session(self, family: str, context: dict[str, Any]) -> RenderSession:
        return RenderSession(
            environment=self.templates.environment,
            family=family,
            scope=self.config.id_namespace,
            reference_style="type" if self.config.all_put else "urn",
            context=context,
            builtin_root=str(self.config.mappings_dir),
            strict_values=self.config.strict_values,
            memoize=self.config.reuse_renderings,
        )

    def _finish(
        self,
        session: RenderSession,
        message_key: str,
        sent: str,
        root: str,
        *,
        message_type: str,
        control_id: str | None,
        sender: str,
        index: int,
        identifier: str | None = None,
    ) -> Conversion:
        origins = []
        resources_out = []
        for origin, resource in session.entries():
            origins.append(origin)
            resources_out.append(resource)
        try:
            timestamp = self.timestamps.instant(sent) if sent else None
        except InvalidTimestamp:
            timestamp = None
        bundle = build_bundle(
            stable_id(self.config.id_namespace, "Bundle", message_key),
            resources_out,
            mode=self.config.request_mode,
            modes=dict(self.config.request_modes),
            timestamp=timestamp,
            # A value FHIR cannot hold was already refused, or replaced with a warning,
            # where the templates wrote it; the bundle then goes without it.
            # A control id of blanks alone (MSH-10 `\.br\` decodes to a line break) is no
            # FHIR string either.
            identifier=(
                {"value": identifier}
                if identifier and identifier.strip() and is_fhir_string(identifier)
                else None
            ),
            deleted=session.deleted,
            warnings=session.warnings,
            periods=session.periods,
        )
        if self._validator is not None:
            self._validator.validate(bundle, origins)
        return Conversion(
            bundle=bundle,
            message_type=message_type,
            control_id=control_id,
            root_template=root,
            sender=sender,
            index=index,
            warnings=tuple(session.warnings),
        )

    def _convert_parsed(
        self, message: Message, root_template: str | None, index: int, digest: bytes
    ) -> Conversion:
        root = self.route_for(message, root_template)
        msh7 = str(message.MSH[7])
        # Message-scoped ids (the Bundle's, MessageHeader's…) come from the content, not
        # MSH-7: a sender reusing a control id within MSH-7's precision (often a minute)
        # must not overwrite an earlier message's resources (see hl7v2/digest.py).
        message_key = "\x1f".join((message.sender, message.control_id, digest.hex()))
        session = self._session(
            "hl7v2", {"msg": message, "message_key": message_key, "message_digest": digest.hex()}
        )
        session.render(root, {})
        return self._finish(
            session,
            message_key,
            msh7,
            root,
            message_type=message.event,
            control_id=message.control_id or None,
            sender=message.sender,
            index=index,
            identifier=message.control_id or None,
        )
