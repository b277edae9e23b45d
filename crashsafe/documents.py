"""Versioned JSON documents: files that say what they are (a ``format`` string) and which
version of it they follow (an integer), such as a generator checkpoint's ``config.json``, a
detector bundle's ``detector.json``, a detector training state's ``state.json`` and a
robustness run's ``run.json``. They are read and checked here; each reader turns a
:class:`DocumentError` into its own message and advice. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# What went wrong, in DocumentError.problem.
MISSING, NOT_JSON, WRONG_FORMAT, BAD_VERSION, OLDER, NEWER = (
    "missing", "not JSON", "wrong format", "bad version", "older", "newer")


class DocumentError(ValueError):
    """A document that cannot be used: ``problem`` says why (one of the constants above),
    ``version`` is the version it declares (for OLDER and NEWER) and ``detail`` the parser's
    message (for NOT_JSON)."""

    def __init__(self, path: str | os.PathLike, problem: str, *, version: Any = None,
                 detail: str = "") -> None:
        self.path, self.problem, self.version, self.detail = Path(path), problem, version, detail
        super().__init__(f"{path}: {problem}" + (f" ({detail})" if detail else ""))


def read_document(path: str | os.PathLike, *, format: str, version: int,
                  version_key: str = "version") -> dict[str, Any]:
    """The JSON object in ``path`` whose ``format`` is ``format`` and whose ``version_key``
    is ``version``; raises DocumentError otherwise."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise DocumentError(path, MISSING) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentError(path, NOT_JSON, detail=str(exc)) from None
    if not isinstance(document, dict) or document.get("format") != format:
        raise DocumentError(path, WRONG_FORMAT)
    found = document.get(version_key)
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise DocumentError(path, BAD_VERSION, version=found)
    if found != version:
        raise DocumentError(path, OLDER if found < version else NEWER, version=found)
    return document
