"""A conversion's warnings, as a list that counts the membership checks made on it."""

from __future__ import annotations

__all__ = ["WarningList"]


# Its own module: a subclass of list cannot be compiled by mypyc, and memo.py is (the
# container's build).
class WarningList(list[str]):
    """A conversion's warnings, counting the ``warning in warnings`` checks.

    The HL7 decoder and the JSON output say a warning once (``if warning not in
    session.warnings``): a rendering that made such a check depends on the warnings
    said before it, and is not reused.
    """

    __slots__ = ("checks",)

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def __contains__(self, item: object) -> bool:
        self.checks += 1
        return list.__contains__(self, item)
