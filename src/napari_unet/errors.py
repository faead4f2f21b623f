"""How every error reaches the user: one line that names the option, file or field, says what
was expected and what came, and gives the fix.

:func:`format_error` is the one formatter: the command line prints its line after
``napari-unet <command>: error:``, the widgets show it as a napari notification and a training
child sends it as the ``message`` of its ``error`` event. It

- keeps one line (a reader's multi-line advice, e.g. imageio's plugin list, is cut);
- puts the name the user typed in place of an internal one at the start of the message
  (``tile: ...`` → ``--tile: ...`` on the command line) and in a suggested setting
  (``use a tile of 252 px (tile=252)`` → ``(--tile 252)``, a shape ``tile=16x64x64`` →
  ``--tile 16 64 64``);
- words a bare operating-system error (no space left, permission denied, a missing file) with
  the file and the fix;
- marks anything else (a bug, not bad input) as such, with what to do.

Writers that may fill a disk raise :func:`no_space`, whose message says how much was needed.
This module imports neither Qt nor torch.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping

__all__ = ["NO_ROOM", "format_error", "is_no_space", "is_out_of_memory", "is_user_error",
           "no_space", "option_names"]

#: Exceptions that are the user's input, not a bug: their message is for the user.
_USER_ERRORS = (ValueError, OSError, MemoryError)

#: A message's subject: the leading name (or names) before ": ".
_SUBJECT = re.compile(r"^([A-Za-z_][\w.\[\]'\"-]*(?:, [A-Za-z_][\w.\[\]'\"-]*)*): ")
#: A setting in a message, ``tile=252``.
_SETTING = re.compile(r"\b([a-z_][a-z0-9_]*)=([\w.+-]+)")


def is_out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or a device's (torch's ``OutOfMemoryError``, a RuntimeError).

    >>> is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    True
    """
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


#: errno values of a write that found no room: a full disk, a file-size limit, a quota
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_no_space(exc: BaseException) -> bool:
    """A write that found no room (a full disk, ``ulimit -f``, a quota).

    >>> is_no_space(no_space("a/b.bin", 10)), is_no_space(OSError(2, "No such file"))
    (True, False)
    """
    return isinstance(exc, OSError) and exc.errno in NO_ROOM


def is_user_error(exc: BaseException) -> bool:
    """True for an error the user can fix (bad input, a file, the disk, memory), False for a
    bug. Our own errors (the command line's ``CLIError`` included) are ValueError or OSError.

    >>> is_user_error(ValueError("tile: too big")), is_user_error(KeyError("x"))
    (True, False)
    """
    return (isinstance(exc, _USER_ERRORS) or type(exc).__name__ == "CLIError"
            or is_out_of_memory(exc))


def no_space(path: str | os.PathLike, needed: int | None = None) -> OSError:
    """The error of a write that ran out of disk space (or hit a file-size limit): one line
    naming the folder, how much the file needed and the fix. Raise it; it is an ``OSError``
    with ``errno.ENOSPC``; :func:`format_error` gives its line.

    >>> print(format_error(no_space("/data/run/last.safetensors", 3_500_000)))
    no space left on '/data/run' (needed ~4 MB for last.safetensors); free some space there, or write to another folder
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    size = "" if needed is None else f"~{max(1, round(needed / 1e6)):,} MB for "
    return OSError(
        errno.ENOSPC,
        f"no space left on {folder or '.'!r} (needed {size}{name}); free some space there, "
        "or write to another folder",
        path,
    )


def _os_error(exc: OSError) -> str | None:
    """A bare operating-system error (``[Errno N] text: 'file'``) in our words; None for an
    OSError that already carries our message."""
    if exc.errno is None or len(exc.args) < 2 or not isinstance(exc.args[1], str):
        return None
    text = exc.args[1]
    if exc.errno == errno.ENOSPC and text.startswith("no space left on"):
        return text  # no_space(): already our line
    where = repr(os.fspath(exc.filename)) if exc.filename is not None else "a file"
    if exc.errno in NO_ROOM:
        folder = os.path.dirname(os.fspath(exc.filename)) if exc.filename else "the disk"
        return (f"no space left on {folder or '.'!r} while writing {where} ({text}); free some "
                "space there, or write to another folder")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: permission denied ({text}); choose a file or folder you can write to"
    if exc.errno == errno.ENOENT:
        return f"{where} does not exist; check the path"
    if exc.errno == errno.EISDIR:
        return f"{where} is a folder; give a file name"
    return f"{where}: {text}; check the file and try again"


def format_error(exc: BaseException, *, names: Mapping[str, str] | None = None) -> str:
    """The one line the user reads for ``exc``.

    Parameters
    ----------
    exc : BaseException
        Anything raised while doing what the user asked.
    names : mapping, optional
        Internal name → the name the user typed or sees (an option such as ``--tile``, a
        widget's field); a message whose subject (the text before the first ``": "``) is
        such a name gets the user's name instead.

    Examples
    --------
    >>> format_error(ValueError("tile: expected an integer >= 1, got 0"), names={"tile": "--tile"})
    '--tile: expected an integer >= 1, got 0'
    >>> format_error(ValueError("memory: needs 9 GiB; use a batch of 1 (batch_size=1)"),
    ...              names={"batch_size": "--batch-size"})
    'memory: needs 9 GiB; use a batch of 1 (--batch-size 1)'
    >>> format_error(OSError("cannot read 'a.png': no backend\\n  pip install imageio[pyav]"))
    "cannot read 'a.png': no backend"
    >>> format_error(KeyError("x"))  # doctest: +ELLIPSIS
    "unexpected KeyError ('x'): this is a bug, not your input; report it with the log ..."
    """
    text = _os_error(exc) if isinstance(exc, OSError) else None
    if text is None:
        text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if is_out_of_memory(exc) and not text.startswith(("memory", "out of memory")):
        return (f"out of memory ({text}); free memory, or use a smaller tile, batch or image "
                "(--tile, --batch-size)")
    if not is_user_error(exc):
        return (f"unexpected {type(exc).__name__} ({text}): this is a bug, not your input; "
                "report it with the log (on the command line, run again with -v for the "
                "details)")
    match = _SUBJECT.match(text)
    if names and match:
        subject = [names.get(part, part) for part in match.group(1).split(", ")]
        text = ", ".join(dict.fromkeys(subject)) + text[match.end(1):]
    if names:  # a setting written name=value becomes the option and its value
        text = _SETTING.sub(lambda m: f"{names[m[1]]} {_value(m[2])}" if m[1] in names else m[0],
                            text)
    return text


def _value(value: str) -> str:
    """A setting's value as typed after its option: a shape ``16x64x64`` is ``16 64 64``.

    >>> _value("16x64x64"), _value("252"), _value("0.5")
    ('16 64 64', '252', '0.5')
    """
    return value.replace("x", " ") if re.fullmatch(r"\d+(?:x\d+)+", value) else value


def option_names(parser) -> dict[str, str]:
    """Internal name → option for an ``argparse`` parser's options: an option's destination
    (``num_classes`` → ``--classes``) and its spelling with underscores (``batch_size`` →
    ``--batch-size``).

    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--classes", dest="num_classes")
    >>> _ = p.add_argument("--batch-size", "-b")
    >>> option_names(p)
    {'num_classes': '--classes', 'classes': '--classes', 'batch_size': '--batch-size'}
    """
    out: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps no public list of its options
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and action.dest != "help":
            out.setdefault(action.dest, long[0])
            out.setdefault(long[0][2:].replace("-", "_"), long[0])
    return out
