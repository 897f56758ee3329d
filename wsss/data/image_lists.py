"""List files that name images relative to a folder beside the dataset: the hard OoD set's (wsss.data.ood) and the
extra image-level-labelled sets' (wsss.data.extra). Both are checked the same way, so a user who fixed one knows
the other: the list read as UTF-8 text, blank lines skipped, `\\r\\n` line ends and spaces around a line dropped,
every problem of a line named with its file and line number.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_list_lines(list_file: Path, *, missing: str, unreadable: str) -> tuple[list[tuple[int, str]], str | None]:
    """The list's non-blank lines, stripped, with their 1-based numbers; or no line and the problem of the file
    itself: `missing` (the fix when there is no such file) or `unreadable` (when it is a folder, unreadable or
    binary), each after the file's name."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], f"{list_file}: {missing}"
    except (OSError, UnicodeDecodeError) as exc:  # a folder, an unreadable or a binary file
        return [], f"{list_file}: not a readable UTF-8 text file ({exc}). {unreadable}"
    lines = ((number, line.strip()) for number, line in enumerate(text.splitlines(), start=1))
    return [(number, line) for number, line in lines if line], None


def escapes_root(relative: str) -> bool:
    """Whether a listed path leads outside the root (absolute, or up through `..`). Judged on the text, not the
    resolved file: an image under the root may be a link to elsewhere, as COCO's converted tree's are."""
    normal = os.path.normpath(relative)
    return os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep)


class ListedPaths:
    """The paths of one list, checked line by line as they are read: each must stay inside the root and be listed
    once (`./a.jpg` and `a.jpg` are the same file)."""

    def __init__(self, list_file: Path, root: Path, *, folder: str, root_key: str) -> None:
        """`folder`: what the root is called in a message ("OoD folder"); `root_key`: the setting naming it."""
        self.list_file, self.root, self.folder, self.root_key = list_file, root, folder, root_key
        self._first_line: dict[str, int] = {}

    def problem(self, number: int, relative: str) -> str | None:
        """What is wrong with line `number`'s path `relative`, or None (the path then counts as listed)."""
        if escapes_root(relative):
            return (
                f"{self.list_file}:{number}: '{relative}' lies outside the {self.folder} {self.root}. List paths "
                f"relative to {self.root_key} (no leading / and no way up through ..): move or link the image into "
                "the folder."
            )
        normal = os.path.normpath(relative)
        if normal in self._first_line:
            return (
                f"{self.list_file}:{number}: '{relative}' is listed twice (first on line {self._first_line[normal]}). "
                "Remove the duplicate line."
            )
        self._first_line[normal] = number
        return None
