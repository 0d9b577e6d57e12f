"""RabbitMQ (AMQP 0-9-1, aio-pika): messages in, bundles out, and scale-out delivery.

- :mod:`.consumer` — ``[amqp.consumer]``: consumes messages to convert from a queue; acks
  once stored (mode "commit") or delivered (mode "delivery"); poison to the dead-letter
  exchange with error headers; transient failures through TTL retry queues.
  :mod:`.ordering` keeps a patient's messages in order (key chains, mode "commit"'s put
  retried in place); :mod:`.delivery_mode` converts, delivers and settles in mode
  "delivery"; :mod:`.settling` acks, requeues, or republishes to the retry queue or the
  dead-letter exchange.
- :mod:`.publisher` — :class:`AmqpSink`: bundles published with publisher confirms
  (``destinations.<name>.amqp``), and :class:`CompositeSink` for FHIR server + AMQP.
- :mod:`.queue` — :class:`AmqpQueue`: ``queue.backend = "amqp"``, the MLLP listener
  stores into partition queues (hash of the ordering key), confirmed before the ACK.
- :mod:`.worker` — :class:`AmqpWorker`: ``passerelle worker`` (connection, probes, stop);
  :mod:`.partitions` claims and releases its partitions; it consumes partitions
  (exclusive consumers, fair-share rebalancing, one message at a time per partition);
  :mod:`.handling` settles each message (convert, deliver with retries in place, ack or
  dead-letter).
- :mod:`.dead_letters` — :class:`AmqpDeadLetters`: the dead-letter queue for
  ``passerelle dead-letters`` (read, re-send where it failed, purge).
- :mod:`.envelope` — the envelope and error headers; :mod:`.topology` — what is declared.
"""

from .consumer import AmqpConsumer
from .dead_letters import AmqpDeadLetter, AmqpDeadLetters
from .envelope import AmqpEnvelope, decode_envelope, encode_envelope, partition_of
from .publisher import AmqpSink, CompositeSink
from .queue import AmqpQueue
from .worker import AmqpWorker

__all__ = [
    "AmqpConsumer",
    "AmqpDeadLetter",
    "AmqpDeadLetters",
    "AmqpEnvelope",
    "AmqpQueue",
    "AmqpSink",
    "AmqpWorker",
    "CompositeSink",
    "decode_envelope",
    "encode_envelope",
    "partition_of",
]
