"""Field values of a parsed HL7 v2 message: split and decoded lazily, on access.

A :class:`Value` is a field, a repetition, a component or a sub-component; see
:mod:`converter.hl7v2.message` for how templates reach them.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..active_session import ACTIVE_SESSION
from ..errors import CharsetError
from .encoding import Encoding, UndecodableEscape

__all__ = ["Value"]

_FIELD, _REP, _COMP, _SUB = 0, 1, 2, 3


class Value:
    """A field, repetition, component or sub-component; decoded on access."""

    __slots__ = (
        "_children",
        "_codec",
        "_depth",
        "_enc",
        "_loc",
        "_parts",
        "_raw",
        "_rep_raws",
        "_reps",
        "_str",
    )

    def __init__(
        self, raw: str, enc: Encoding, codec: str, depth: int, loc: tuple[str, int, int, int, int]
    ) -> None:
        self._raw = raw
        self._enc = enc
        self._codec = codec
        self._depth = depth
        # (segment label, field, repetition, component, sub-component); 0 = not narrowed.
        self._loc = loc
        # Split of a repetition into components, or of a component into sub-components;
        # of a field, its first repetition's components (see __getitem__).
        self._parts: list[str] | None = None
        # Split of a field into repetitions: done once, however the repetitions are read.
        self._rep_raws: list[str] | None = None
        # A field's repetitions once made (``field[n]`` reads the first; loops, ``first``
        # and ``rep_where`` all of them): each split and decoded once, however read.
        self._reps: list[Value | None] | None = None
        self._children: dict[int, Value] | None = None
        self._str: str | None = None

    # -- structure ---------------------------------------------------------------------
    def _child(self, n: int) -> Value:
        depth = self._depth
        if depth == _FIELD:
            return self._rep(1)[n]  # the repetition's own cache serves ``cx[n]`` too
        if depth == _SUB:
            return self if n == 1 else self._empty(n)
        parts = self._parts
        if parts is None:
            sep = self._enc.component if depth == _REP else self._enc.subcomponent
            # No sub-component separator declared (MSH-2 "^~\\"): a component is one leaf.
            parts = self._parts = self._raw.split(sep) if sep else [self._raw]
        raw = parts[n - 1] if n <= len(parts) else ""
        seg, field, rep, comp, _ = self._loc
        loc = (seg, field, rep, n, 0) if depth == _REP else (seg, field, rep, comp, n)
        return Value(raw, self._enc, self._codec, depth + 1, loc)

    def _empty(self, n: int) -> Value:
        seg, field, rep, comp, _ = self._loc
        return Value("", self._enc, self._codec, _SUB, (seg, field, rep, comp, n))

    def _rep_split(self) -> list[str]:
        """The raw repetitions of this field, split once and kept: every way of reading
        them (``reps``, iteration, ``first``, ``rep_where``, ``len``) stays linear in the
        field's length, however many repetitions it holds. MSH-2 is never split."""
        parts = self._rep_raws
        if parts is None:
            raw = self._raw
            sep = self._enc.repetition
            parts = raw.split(sep) if sep in raw and not self._is_msh2() else [raw]
            self._rep_raws = parts
        return parts

    def _rep(self, n: int) -> Value:
        reps = self._reps
        if reps is None:
            reps = self._reps = [None] * len(self._rep_split())
        if n > len(reps):
            return self._make_rep("", n)
        rep = reps[n - 1]
        if rep is None:
            raws = self._rep_raws or self._rep_split()  # split when ``reps`` was made
            loc = self._loc
            rep = reps[n - 1] = Value(
                raws[n - 1], self._enc, self._codec, _REP, (loc[0], loc[1], n, 0, 0)
            )
            if n == 1 and self._children is not None:
                # Components already read through the field (``pid[5][1]``): the same
                # objects, one cache from now on (see __getitem__).
                rep._children = self._children
                rep._parts = self._parts
        return rep

    def _make_rep(self, raw: str, n: int) -> Value:
        seg, field, _, _, _ = self._loc
        return Value(raw, self._enc, self._codec, _REP, (seg, field, n, 0, 0))

    def _is_msh2(self) -> bool:
        return self._loc[1] <= 2 and self._loc[0] == "MSH"

    def __getitem__(self, key: object) -> Value:
        if type(key) is not int:  # before the cache: see Segment.__getitem__
            raise KeyError(key)
        children = self._children
        if children is None:
            children = self._children = {}
        else:
            found = children.get(key)
            if found is not None:
                return found
        if key < 1:
            raise IndexError(f"HL7 positions start at 1, got {key} at {self.path}")
        # _child's work, inlined for the two cases every ``xpn[1]`` and ``cx[4][2]`` reads:
        # a template expression pays one call per step instead of two.
        depth = self._depth
        if depth == _FIELD:
            reps = self._reps
            first = reps[0] if reps is not None else None
            if first is not None:
                child = first[key]  # the repetition's own cache serves ``cx[n]`` too
            else:
                # A component of the first repetition without making the repetition: when
                # it is made (_rep), it takes over these components and their split, so
                # ``pid[5][1]`` and ``pid[5].first[1]`` stay the same object.
                parts = self._parts
                if parts is None:
                    raw = self._rep_split()[0]
                    sep = self._enc.component
                    parts = self._parts = raw.split(sep) if sep else [raw]
                loc = self._loc
                child = Value(
                    parts[key - 1] if key <= len(parts) else "",
                    self._enc,
                    self._codec,
                    _COMP,
                    (loc[0], loc[1], 1, key, 0),
                )
        elif depth == _SUB:
            child = self if key == 1 else self._empty(key)
        else:
            parts = self._parts
            if parts is None:
                sep = self._enc.component if depth == _REP else self._enc.subcomponent
                parts = self._parts = self._raw.split(sep) if sep else [self._raw]
            raw = parts[key - 1] if key <= len(parts) else ""
            seg, field, rep, comp, _ = self._loc
            loc = (seg, field, rep, key, 0) if depth == _REP else (seg, field, rep, comp, key)
            child = Value(raw, self._enc, self._codec, depth + 1, loc)
        children[key] = child
        return child

    def __iter__(self) -> Iterator[Value]:
        """Repetitions of a field (empty ones skipped); any other value yields itself."""
        if self._depth != _FIELD:
            if self:
                yield self
            return
        raws = self._rep_raws
        if raws is None:
            raws = self._rep_split()
        for n in range(len(raws)):
            # Templates loop over a field several times: a repetition already made is
            # read from the list, without _rep's call.
            reps = self._reps
            rep = reps[n] if reps is not None else None
            if rep is None:
                rep = self._rep(n + 1)
            if rep:
                yield rep

    @property
    def reps(self) -> list[Value]:
        """All repetitions, including empty ones (positions are kept)."""
        if self._depth != _FIELD:
            return [self]
        return [self._rep(n) for n in range(1, len(self._rep_split()) + 1)]

    @property
    def first(self) -> Value:
        """The first non-empty repetition (an empty value when there is none)."""
        for rep in self:
            return rep
        return self._rep(1)

    def first_with(self, component: int) -> Value:
        """The first repetition whose ``component`` holds text (``pid[3].first_with(1)``:
        the first identifier with an ID number, CX.1); an empty value when none does."""
        for rep in self:
            if str(rep._child(component)).strip():
                return rep
        return self._empty_rep()

    def rep_where(self, component: int, *values: str, having: int | None = None) -> Value:
        """The first repetition whose ``component`` equals one of ``values``, in the order
        of ``values`` (``pid[3].rep_where(5, "MR", "PI")``); empty when none matches.
        With ``having``, only repetitions whose component ``having`` holds text count
        (``having=1``: an identifier with an ID number, not ``^^^^MR``)."""
        # One pass: keep the earliest repetition matching the best-ranked value.
        rank: dict[str, int] = {}
        for position, wanted in enumerate(values):
            rank.setdefault(wanted, position)
        best: Value | None = None
        best_rank = len(values)
        for rep in self:
            if having is not None and not str(rep._child(having)).strip():
                continue
            found = rank.get(str(rep._child(component)), best_rank)
            if found < best_rank:
                best, best_rank = rep, found
                if found == 0:
                    break
        return best if best is not None else self._empty_rep()

    def _empty_rep(self) -> Value:
        seg, field, _, _, _ = self._loc
        return Value("", self._enc, self._codec, _REP, (seg, field, 1, 0, 0))

    @property
    def components(self) -> list[Value]:
        """Components of this repetition (of the first one for a field)."""
        if self._depth == _FIELD:
            return self._rep(1).components
        if self._depth != _REP:
            return [self]
        count = self._raw.count(self._enc.component) + 1
        return [self._child(n) for n in range(1, count + 1)]

    # -- text ----------------------------------------------------------------------------
    @property
    def raw(self) -> str:
        """The value as it appears in the message, escape sequences included."""
        return self._raw

    @property
    def text(self) -> str:
        """The whole value decoded, delimiters inside it kept as literal characters."""
        if self._is_msh2():
            return self._raw
        return self._unescape(self._raw)

    def __str__(self) -> str:
        """The decoded text of the first leaf (decoded once, then kept)."""
        text = self._str
        if text is not None:
            return text
        raw = self._raw
        if not raw or raw == '""':
            self._str = ""
            return ""
        loc = self._loc
        if loc[1] <= 2 and loc[0] == "MSH":  # MSH-1 and MSH-2 are delimiters, not text
            self._str = raw
            return raw
        enc = self._enc
        depth = self._depth
        if depth <= _FIELD and enc.repetition in raw:
            raw = raw.split(enc.repetition, 1)[0]
        if depth <= _REP and enc.component in raw:
            raw = raw.split(enc.component, 1)[0]
        sub = enc.subcomponent
        if depth <= _COMP and sub and sub in raw:
            raw = raw.split(sub, 1)[0]
        if raw == '""':
            text = ""
        else:
            escape = enc.escape
            # Most values hold no escape sequence: nothing to decode, no call.
            text = self._unescape(raw) if escape and escape in raw else raw
        self._str = text
        return text

    def _unescape(self, raw: str) -> str:
        """``raw`` (a part of this value) decoded; a ``\\Xhh\\`` whose bytes are not valid
        in the message's charset is handled as an undecodable raw byte is."""
        enc = self._enc
        if not enc.escape or enc.escape not in raw:
            return raw  # most values: no escape sequence, nothing to decode
        try:
            return enc.unescape(raw, self._codec, undecodable="raise")
        except UndecodableEscape as exc:
            return self._undecodable(raw, exc)

    def _undecodable(self, raw: str, exc: UndecodableEscape) -> str:
        """A CharsetError at this value's path, as the same byte written raw would be
        (``PID-5``); in lenient mode (``strict_values`` off) U+FFFD with a warning that
        names the place, never the value. Outside a rendering (the message header read
        while parsing) there is no lenient mode: the error is raised."""
        reason = f"hexadecimal escape is not valid {exc.codec}"
        session = ACTIVE_SESSION.get()
        if session is None or session.strict_values:
            # The escape itself goes to detail: it is part of the field's content.
            raise CharsetError(
                reason, location=self.path, detail=f"escape {exc.sequence[:40]}"
            ) from None
        warning = f"{reason} at {self.path}; replaced by U+FFFD"
        if warning not in session.warnings:  # a value read by several templates: said once
            session.warn(warning)
        return self._enc.unescape(raw, self._codec, undecodable="replace")

    @property
    def value(self) -> str:
        """Same as ``str(value)``: decoded text of the first leaf."""
        return str(self)

    def __bool__(self) -> bool:
        # HL7's explicit null ``""`` carries no value for a conversion. A value is present
        # when any of its leaves has text, not only the first one: ``^John`` (given name
        # only) or ``^NET^Internet^a@b.org`` (e-mail) must not be skipped as empty.
        text = self._str
        if text is None:
            text = self.__str__()
        if text:
            return True
        raw = self._raw
        if not raw or raw == '""' or self._is_msh2():
            return False
        enc = self._enc
        leaves = [raw]
        splits = ((_FIELD, enc.repetition), (_REP, enc.component), (_COMP, enc.subcomponent))
        for depth, sep in splits:
            if self._depth <= depth and sep:
                leaves = [part for leaf in leaves for part in leaf.split(sep)]
        return any(leaf and leaf != '""' and self._unescape(leaf) for leaf in leaves)

    def __len__(self) -> int:
        return len(self._rep_split()) if self._depth == _FIELD else (1 if self else 0)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Value):
            return self._raw == other._raw
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"<Value {self.path}>"

    # -- location ------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """HL7 location, e.g. ``PID-3(2).4.1`` or ``OBX[2]-5``."""
        seg, field, rep, comp, sub = self._loc
        out = f"{seg}-{field}"
        if rep > 1:
            out += f"({rep})"
        if comp:
            out += f".{comp}"
        if sub:
            out += f".{sub}"
        return out
