"""Passerelle's converter: HL7 v2 messages (and CDA documents) to FHIR R4 Bundles.

    >>> from converter import Converter, ConverterConfig
    >>> converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    >>> [conversion] = converter.convert(open("adt.hl7", "rb").read())
    >>> conversion.bundle["type"]
    'transaction'

A pure library: bytes in, Bundle out; no network and no environment reads. Decimals in
a bundle are :class:`decimal.Decimal` (FHIR keeps ``7.20`` as written): write bundles with
``conversion.to_json()`` or :func:`json_dumps`, read them back with :func:`json_loads`.
"""

from .assembly.json_text import dumps as json_dumps
from .assembly.json_text import loads as json_loads
from .convert import Conversion, Converter, ConverterConfig, InputType, detect_input_type
from .errors import (
    BundleValidationError,
    CharsetError,
    ConfigurationError,
    ConversionError,
    MappingError,
    ParseError,
    TemplateError,
    UnsupportedMessageError,
)

__all__ = [
    "BundleValidationError",
    "CharsetError",
    "ConfigurationError",
    "Conversion",
    "ConversionError",
    "Converter",
    "ConverterConfig",
    "InputType",
    "MappingError",
    "ParseError",
    "TemplateError",
    "UnsupportedMessageError",
    "detect_input_type",
    "json_dumps",
    "json_loads",
]
