"""Errors raised by the converter.

Every error the converter raises derives from :class:`ConversionError`; each subclass
maps to what a caller has to do with the message::

    ConversionError                  root: catch this to handle any conversion failure
    ├── ParseError                   input is not readable HL7 v2 / XML   → reject (HL7 AR)
    │   └── CharsetError             bytes do not decode in the declared charset
    ├── UnsupportedMessageError      readable, but no route for its type/version → reject (AR)
    ├── MappingError                 a template failed on this message     → AE, dead letter
    │   └── TemplateError            the template set itself is broken (syntax, missing file)
    └── BundleValidationError        output is not valid FHIR              → AE, dead letter

    ConfigurationError               bad converter configuration (not tied to one message)

Errors carry where they happened: the HL7 path (``OBX[2]-5.1``), the template
``file:line`` and the message control id (MSH-10) when known. ``str(error)`` never
contains message content, so it is safe to log; the offending value, when useful, is in
``error.detail``.
"""

from __future__ import annotations

__all__ = [
    "BundleValidationError",
    "CharsetError",
    "ConfigurationError",
    "ConversionError",
    "MappingError",
    "ParseError",
    "TemplateError",
    "UnsupportedMessageError",
]


class ConversionError(Exception):
    """Root of every error raised while converting one message or document."""

    #: HL7 table 0357 error code an acknowledgement should carry.
    hl7_error_code: str = "207"

    def __init__(
        self,
        message: str,
        *,
        location: str | None = None,
        template: str | None = None,
        control_id: str | None = None,
        message_type: str | None = None,
        detail: str | None = None,
        hl7_error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = message
        if hl7_error_code is not None:
            # One error of a class may be more precise than its default (a MappingError
            # for an invalid value: 102, data type error).
            self.hl7_error_code = hl7_error_code
        #: The offending value or output line. It may hold patient data: show it to
        #: someone allowed to read the message (CLI, dead-letter view), never log it.
        self.detail = detail
        self.location = location
        self.template = template
        self.control_id = control_id
        self.message_type = message_type
        #: What the control id is, for :meth:`__str__`: MSH-10, or a CDA document's id.
        self.control_id_label = "MSH-10"

    def with_context(
        self,
        *,
        control_id: str | None = None,
        message_type: str | None = None,
        control_id_label: str | None = None,
    ) -> ConversionError:
        """Fill in message-level context that the raising code did not know."""
        if self.control_id is None:
            self.control_id = control_id
            if control_id_label is not None:
                self.control_id_label = control_id_label
        if self.message_type is None:
            self.message_type = message_type
        return self

    def __str__(self) -> str:
        parts = [self.reason]
        if self.location:
            parts.append(f"at {self.location}")
        if self.template:
            parts.append(f"in template {self.template}")
        if self.control_id:
            parts.append(f"({self.control_id_label} {self.control_id})")
        return " ".join(parts)


class ParseError(ConversionError):
    """The input cannot be read as HL7 v2 ER7 or as a CDA document."""

    hl7_error_code = "102"


class CharsetError(ParseError):
    """Bytes that do not decode in the character set the message declares."""


class UnsupportedMessageError(ConversionError):
    """The message is readable but no root template handles its type or version."""

    hl7_error_code = "200"


class MappingError(ConversionError):
    """A template failed while rendering this message."""

    hl7_error_code = "207"


class TemplateError(MappingError):
    """The template set is broken: syntax error, missing template, unknown code map."""


class BundleValidationError(ConversionError):
    """The assembled bundle does not conform to the FHIR structures."""

    hl7_error_code = "207"

    def __init__(self, message: str, *, issues: list[str] | None = None, **kwargs: str | None):
        super().__init__(message, **kwargs)
        self.issues = issues or []


class ConfigurationError(Exception):
    """Invalid converter configuration (a path, a zone, an option)."""
