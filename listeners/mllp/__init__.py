"""MLLP: framing, acknowledgements, the listener server and a client (``passerelle send``).

The server hands each frame to a handler (a frame over ``max_frame_bytes``, reduced to
its head, to a second one) and writes back the ACK the handler returns;
:mod:`.ack` builds those ACKs from the received bytes. See :mod:`.server` for what a
handler's result means (ACK, no reply, close so that the sender re-sends).
"""

from .ack import (
    TABLE_0357,
    AckBuilder,
    AckCode,
    AckInfo,
    AckMode,
    AckOutcome,
    ControlIdGenerator,
    ErrorLocation,
    MessageHeader,
    Severity,
    build_ack,
    parse_ack,
    read_header,
    wants_accept_ack,
)
from .client import (
    CommitNakError,
    ConnectionClosedError,
    MllpClient,
    MllpClientError,
    add_send_command,
    run_send,
)
from .framing import (
    DEFAULT_MAX_FRAME_BYTES,
    CommitAck,
    FrameBudget,
    FrameBudgetError,
    FrameDecoder,
    FrameReader,
    FrameTimeoutError,
    FrameTooLargeError,
    IncompleteFrameError,
    OversizedFrame,
    commit_ack,
    frame,
)
from .handler import NO_REPLY, Handler, LaterReply, OversizedHandler, PeerInfo
from .server import MllpServer
from .stats import MllpStats
from .tls import client_ssl_context, server_ssl_context, subject_text

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "NO_REPLY",
    "TABLE_0357",
    "AckBuilder",
    "AckCode",
    "AckInfo",
    "AckMode",
    "AckOutcome",
    "CommitAck",
    "CommitNakError",
    "ConnectionClosedError",
    "ControlIdGenerator",
    "ErrorLocation",
    "FrameBudget",
    "FrameBudgetError",
    "FrameDecoder",
    "FrameReader",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "Handler",
    "IncompleteFrameError",
    "LaterReply",
    "MessageHeader",
    "MllpClient",
    "MllpClientError",
    "MllpServer",
    "MllpStats",
    "OversizedFrame",
    "OversizedHandler",
    "PeerInfo",
    "Severity",
    "add_send_command",
    "build_ack",
    "client_ssl_context",
    "commit_ack",
    "frame",
    "parse_ack",
    "read_header",
    "run_send",
    "server_ssl_context",
    "subject_text",
    "wants_accept_ack",
]
