"""What ``passerelle convert`` reads: the paths of the command line, the files of a folder
(leaving out hidden, backup and temporary files), and standard input (``-``). Split out
of :mod:`converter.cli`; what is read here is converted in :mod:`converter.cli_convert`."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .convert import Converter, detect_input_type
from .errors import ConfigurationError, ConversionError, ParseError

__all__ = [
    "DEFAULT_MAX_STREAM_BYTES",
    "STDIN",
    "Input",
    "StreamTooLarge",
    "inputs",
    "is_backup_name",
    "not_for_family",
    "read_input",
    "template_families",
]

#: The path that means standard input, as for ``cat -``.
STDIN = "-"
#: How much of standard input, a pipe or a device is read at most (``--max-stream-bytes``):
#: a regular file has a size, a stream may never end (``/dev/zero``, a producer stuck in a
#: loop) and was read until the memory ran out.
DEFAULT_MAX_STREAM_BYTES = 256 * 1024 * 1024
#: Where ``--template NAME`` looks in each input family.
ROOT_FOLDERS = {"hl7v2": "hl7v2/messages", "cda": "cda/documents"}
FAMILY_NAMES = {"hl7v2": "HL7 v2", "cda": "CDA"}
#: In a folder, files with these extensions are always converted (a damaged message
#: fails the run); other files are skipped unless they start like HL7 v2 or XML.
_MESSAGE_SUFFIXES = (".hl7", ".xml")
#: What :func:`detect_input_type` reads of a file to tell HL7 v2 or XML from anything else.
_HEAD_BYTES = 4096
#: Names editors, office suites and file transfers give their backups and unfinished
#: files, next to the real one: ``a.hl7~`` (Emacs, Vim, gedit), ``#a.hl7#`` (Emacs
#: auto-save), ``~$a.xml`` (Microsoft Office), ``a.hl7.swp``…``.swa`` (Vim, when its swap
#: files are not hidden), ``.bak``/``.orig``/``.rej`` (copies, patch leftovers),
#: ``.tmp``/``.part``/``.filepart``/``.crdownload`` (a transfer still being written: read
#: now, it is a truncated message). They start like the message they copy, so the content
#: check does not catch them: ``a.hl7~`` converted into ``a.json`` as well and clashed
#: with ``a.hl7``, failing the run. Hidden names (``.a.hl7.swp``, ``.DS_Store``) are never
#: read at all.
_BACKUP_NAME = re.compile(
    r"""(?ix)
    ( ~$                 # a.hl7~
    | ^\#.*\#$           # #a.hl7#
    | ^~\$               # ~$a.xml
    | \.(?: sw[a-p] | bak | orig | rej | tmp | temp | part | partial | filepart
          | crdownload | download )$
    )"""
)


def is_backup_name(name: str) -> bool:
    """Whether a file name in a folder is an editor's backup or an unfinished transfer."""
    return _BACKUP_NAME.search(name) is not None


class StreamTooLarge(Exception):
    """Standard input or a pipe went on past ``--max-stream-bytes``."""


@dataclass(frozen=True)
class Input:
    path: Path
    #: Found in a folder rather than named on the command line: may be skipped.
    in_folder: bool
    #: Why it cannot be read at all (a folder that cannot be listed, a broken link): a
    #: FAILED line in its turn, the other inputs still converted.
    problem: str | None = None
    #: Not a regular file (a pipe, a device) in a folder: SKIPPED, never opened.
    not_a_file: bool = False
    #: An editor's backup or an unfinished transfer in a folder: SKIPPED by its name.
    backup: bool = False
    #: ``-``: standard input.
    stdin: bool = False

    @property
    def label(self) -> str:
        """How failure lines name it: the path, ``<stdin>`` for standard input."""
        return "<stdin>" if self.stdin else str(self.path)

    @property
    def source(self) -> Path:
        """The name its bundles are written under in ``--out``: ``stdin.json`` for ``-``."""
        return Path("stdin") if self.stdin else self.path


def inputs(paths: Sequence[Path]) -> Iterator[Input]:
    """Every input of the command line in order, folders one level deep."""
    if sum(1 for path in paths if str(path) == STDIN) > 1:
        raise ConfigurationError("standard input (-) can be given only once")
    for path in paths:
        if str(path) == STDIN:
            if sys.stdin is None:  # started with ``<&-``
                raise ConfigurationError("standard input (-) is closed")
            yield Input(path, in_folder=False, stdin=True)
            continue
        if not path.is_dir():
            yield Input(path, in_folder=False)
            continue
        try:
            children = sorted(path.iterdir())
        except OSError as exc:  # no permission to list it, removed meanwhile…
            yield Input(path, in_folder=False, problem=f"cannot read folder: {exc.strerror}")
            continue
        for child in children:
            if not child.name.startswith("."):
                found = _folder_entry(child)
                if found is not None:
                    yield found


def _folder_entry(child: Path) -> Input | None:
    """A folder's entry as an input; None for a subfolder (not read, as documented)."""
    try:
        if child.is_file():
            return Input(child, in_folder=True, backup=is_backup_name(child.name))
        if child.is_dir():
            return None
        if child.is_symlink():
            # is_file() and is_dir() are False for a link to nothing, or a loop of links.
            return Input(child, in_folder=True, problem="broken symbolic link (or a loop)")
    except OSError as exc:  # the folder can be listed but not searched (no x permission)
        return Input(child, in_folder=True, problem=f"cannot read file: {exc.strerror}")
    return Input(child, in_folder=True, not_a_file=True)


def read_input(item: Input, *, max_stream_bytes: int) -> bytes | None:
    """The input's bytes, or None for a folder's file that is not a message (a README, a
    backup archive): neither named ``.hl7`` or ``.xml`` nor starting like HL7 v2 or XML.
    Files named on the command line never are. Its head is read first: a 2 GB archive
    next to the messages is skipped without being loaded into memory. Standard input, a
    pipe or a device (``<(zcat batch.gz)``) is read up to ``max_stream_bytes``
    (:class:`StreamTooLarge` beyond)."""
    if item.stdin:
        assert sys.stdin is not None  # checked by inputs()
        return _read_stream(sys.stdin.buffer, max_stream_bytes)
    with item.path.open("rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return _read_stream(stream, max_stream_bytes)
        if not item.in_folder or item.path.suffix.lower() in _MESSAGE_SUFFIXES:
            return stream.read()
        head = stream.read(_HEAD_BYTES)
        try:
            detect_input_type(head)
        except ParseError:
            return None
        return head + stream.read()


def _read_stream(stream: BinaryIO, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise StreamTooLarge(
            f"input goes on past {limit} bytes (--max-stream-bytes): write it to a file"
        )
    return data


def template_families(
    converter: Converter, template: str | None, input_type: str
) -> frozenset[str]:
    """The input families (``hl7v2``, ``cda``) that ``--template NAME`` has a root
    template for; every family without ``--template``. Checked once, before converting:
    a name that is a root template of no family (a typo), or not of the family
    ``--input-type`` names, is a usage error. An input of a family it does not cover (a
    CDA document in a folder converted with ``--template ADT``) fails on its own line;
    it stopped the whole run midway with exit 2, after converting the files before it,
    or was rendered by the other family's template (``'msg' is undefined``)."""
    if template is None:
        return frozenset(ROOT_FOLDERS)
    if not template.strip():
        raise ConfigurationError("--template is empty")
    if template.endswith(".j2"):
        if not converter.templates.exists(template):
            raise ConfigurationError(f"--template: root template {template} not found")
        inside = template.removeprefix("builtin/")
        found = frozenset(
            family for family, folder in ROOT_FOLDERS.items() if inside.startswith(folder + "/")
        )
        # A root of one's own outside both folders: the user knows which inputs it takes.
        families = found or frozenset(ROOT_FOLDERS)
    else:
        families = frozenset(
            family
            for family, folder in ROOT_FOLDERS.items()
            if converter.templates.exists(f"{folder}/{template}.j2")
        )
        if not families:
            raise ConfigurationError(
                f"--template {template}: no root template hl7v2/messages/{template}.j2 "
                f"(HL7 v2) or cda/documents/{template}.j2 (CDA)"
            )
    if input_type in ROOT_FOLDERS and input_type not in families:
        raise ConfigurationError(
            f"--template {template} is not a root template for {FAMILY_NAMES[input_type]} "
            f"inputs (--input-type {input_type})"
        )
    return families


def not_for_family(template: str | None, kind: str) -> ConversionError:
    """An input of a family ``--template`` has no root template for (see
    :func:`template_families`)."""
    family = FAMILY_NAMES.get(kind, kind)
    return ConversionError(
        f"--template {template} is not a root template for {family} inputs "
        "(convert them in a run of their own)"
    )
