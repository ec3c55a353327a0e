"""The outputs of one run, written beside their destinations and moved into place together, or not at all.

Every output is first written in a hidden staging folder (``.medtrans-XXXXXXXX.tmp``) in its destination's folder,
so the final ``os.replace`` stays on one file system and is atomic. Committing moves every staged file into place;
files it replaces are kept aside until all moves succeeded, so a failure puts them back. Any error or
``KeyboardInterrupt`` before that removes every staged file, every output this run already moved, and every folder
it created. SIGINT is held back while files are moved or removed: a second Ctrl+C cannot leave half a run behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OutputError
from .files import destination

_PREFIX, _SUFFIX = ".medtrans-", ".tmp"
_SERIES = "series"


@dataclass
class _Entry:
    """One staging folder and the moves that put its content in place: ``(staged name, destination)``."""

    staging: Path
    moves: list[tuple[str, Path]] = field(default_factory=list)


class StagedOutputs:
    """The outputs of one run: stage each with :meth:`file`, :meth:`files` or :meth:`folder`, then commit them all.

    As a context manager it commits when the block ends normally and discards everything on any exception
    (``KeyboardInterrupt`` included)::

        with StagedOutputs() as outputs:
            sitk.WriteImage(image, str(outputs.file(Path("sct.nii.gz"))))
            Path(outputs.file(Path("sct.json"))).write_text("{}")
        # both files are in place, or neither is
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._created: list[Path] = []  # folders made for the outputs, outermost first
        self._moved: list[tuple[Path, Path | None]] = []  # (destination, where what it replaced waits meanwhile)
        self._open = True

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def file(self, path: str | Path, *, companions: Sequence[str | Path] = (), staged_name: str | None = None) -> Path:
        """Stage the file ``path``; returns where to write it.

        Args:
            path: the destination (missing folders are created, and removed again on failure).
            companions: files the writer makes beside it under their own names (a detached header's data file).
            staged_name: write under this name instead of ``path``'s, e.g. to stay within the file system's name
                length when the writer adds temporary names of its own; detached headers must keep their name.
        """
        path = destination(path)
        names = [Path(c).name for c in companions]
        entry = self._stage(path.parent)
        entry.moves = [(name, path.parent / name) for name in names] + [(staged_name or path.name, path)]
        return entry.staging / (staged_name or path.name)

    def files(self, folder: str | Path, names: Sequence[str]) -> Path:
        """Stage several files of one folder, written under their own ``names``; returns the folder to write them in."""
        folder = destination(folder)
        entry = self._stage(folder)
        entry.moves = [(name, folder / name) for name in names]
        return entry.staging

    def folder(self, path: str | Path, *, overwrite: bool, replaceable: str) -> Path:
        """Stage a whole folder (e.g. a DICOM series) that replaces ``path``; returns the empty folder to fill.

        Args:
            path: destination folder; an existing empty one is replaced.
            overwrite: replace an existing non-empty folder, only if it holds nothing but files matching
                ``replaceable``, so a wrong path never deletes unrelated data.
            replaceable: glob of the files a previous write left, e.g. ``"*.dcm"``.

        Raises:
            OutputError: ``path`` is a file, or holds files and may not (or cannot safely) be replaced.
        """
        path = destination(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file; give a folder for the DICOM series")
        existing = list(path.iterdir()) if path.exists() else []
        if existing and not overwrite:
            raise OutputError(f"{path} already exists and is not empty; pass --overwrite to replace it")
        if existing and set(existing) != set(path.glob(replaceable)):
            raise OutputError(
                f"{path} holds files other than {replaceable}; refusing to replace it, choose another folder"
            )
        entry = self._stage(path.parent)
        (entry.staging / _SERIES).mkdir()
        entry.moves = [(_SERIES, path)]
        return entry.staging / _SERIES

    def commit(self) -> None:
        """Move every staged output into place; on any failure (or Ctrl+C meanwhile) undo every move and re-raise."""
        if not self._open:
            return
        with interrupts_held() as interrupted:
            try:
                for entry in self._entries:
                    self._move_in(entry)
                if interrupted():
                    raise KeyboardInterrupt
            except BaseException:
                self._undo()
                raise
            finally:
                self._open = False
            for entry in self._entries:
                shutil.rmtree(entry.staging, ignore_errors=True)  # only what was replaced is left there

    def discard(self) -> None:
        """Remove every staged file, every output already moved (restoring what it replaced) and the new folders."""
        if self._open:
            with interrupts_held():
                self._undo()
                self._open = False

    def _stage(self, folder: Path) -> _Entry:
        if not self._open:
            raise RuntimeError("these outputs were already committed or discarded")
        self._make_folders(folder)
        try:
            entry = _Entry(Path(tempfile.mkdtemp(prefix=_PREFIX, suffix=_SUFFIX, dir=folder)))
        except OSError as err:
            raise OutputError(f"cannot write in {folder}: {err.strerror or err}") from None
        self._entries.append(entry)
        return entry

    def _make_folders(self, folder: Path) -> None:
        missing = []
        while not (folder.exists() or folder.is_symlink()):
            missing.append(folder)
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"cannot create the folder {missing[-1]}: {folder} is a file, not a folder")
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise OutputError(f"cannot create the folder {path}: {err.strerror or err}") from None
            self._created.append(path)

    def _move_in(self, entry: _Entry) -> None:
        staged = {name for name, _ in entry.moves}
        unexpected = sorted(p.name for p in entry.staging.iterdir() if p.name not in staged)
        if unexpected:
            raise OutputError(f"the writer made unexpected files {', '.join(unexpected)} for {entry.moves[-1][1]}")
        for name, target in entry.moves:
            source = entry.staging / name
            if not source.exists():
                raise OutputError(f"could not write {target}: the writer made no file")
            if target.exists() and target.is_dir() != source.is_dir():
                kind = "folder" if target.is_dir() else "file"
                raise OutputError(
                    f"{target} is a {kind}; refusing to replace it with a {'file' if kind == 'folder' else 'folder'}"
                )
            try:
                backup = None
                if target.exists() or target.is_symlink():
                    backup = entry.staging / f".replaced-{len(self._moved)}"
                    os.replace(target, backup)
                self._moved.append((target, backup))
                os.replace(source, target)
            except OSError as err:
                raise OutputError(f"could not move {target} into place: {err.strerror or err}") from None

    def _undo(self) -> None:
        """Best effort, never raising: every step that can be undone is, whatever failed before."""
        for target, backup in reversed(self._moved):
            _remove(target)
            if backup is not None:
                try:
                    os.replace(backup, target)
                except OSError:
                    pass
        self._moved.clear()
        for entry in self._entries:
            shutil.rmtree(entry.staging, ignore_errors=True)
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: something else lives there now


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def staged(outputs: StagedOutputs | None) -> Iterator[StagedOutputs]:
    """``outputs`` itself (its owner commits them), or new outputs committed when the block ends."""
    if outputs is not None:
        yield outputs
        return
    with StagedOutputs() as own:
        yield own


@contextmanager
def interrupts_held() -> Iterator[Callable[[], bool]]:
    """Hold SIGINT back meanwhile; yields a callable telling whether one arrived (and would have interrupted).

    Only the main thread receives signals; elsewhere this does nothing.
    """
    received: list[int] = []
    previous = None
    installed = threading.current_thread() is threading.main_thread()
    if installed:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield lambda: bool(received) and previous is not signal.SIG_IGN
    finally:
        if installed:  # a handler installed outside Python reads as None: put Python's default back then
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
