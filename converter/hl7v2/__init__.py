"""HL7 v2 ER7 parsing: tokenizer, containers, structures, charsets."""

from .digest import message_digest
from .encoding import Encoding
from .er7 import RawMessage, parse_message, split_messages
from .message import Group, Message, Segment
from .peek import Header, peek_header
from .structure import StructureCatalog
from .value import Value

__all__ = [
    "Encoding",
    "Group",
    "Header",
    "Message",
    "RawMessage",
    "Segment",
    "StructureCatalog",
    "Value",
    "message_digest",
    "parse_message",
    "peek_header",
    "split_messages",
]
