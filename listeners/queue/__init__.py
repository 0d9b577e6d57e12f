"""The durable message queue: every acknowledged message is stored here first."""

from .base import DeadLetter, Envelope, Job, MessageQueue, PutResult
from .sqlite import SqliteQueue

__all__ = ["DeadLetter", "Envelope", "Job", "MessageQueue", "PutResult", "SqliteQueue"]
