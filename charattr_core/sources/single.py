"""One image file with its sidecar tags, for `charattr extract IMAGE`: the same rules as the folder
reader (`a.png.txt` first, then `a.txt` unless it would tag several images), by running the
folder reader itself over the image's folder, limited to the files that can matter."""

from __future__ import annotations

import os
from pathlib import Path

from ..records import SourceItem
from .base import ROOT_SHARD, is_image_name
from .folder import SIDECAR_SUFFIX, FolderSource, _listing


def read_image_file(path: str | Path) -> SourceItem:
    """The image at `path` (bytes, sidecar tags or the reason they could not be read), as the
    folder reader would yield it. A file the folder reader would not list (an unknown extension,
    a hidden name) is read as it is, without tags."""
    image = Path(os.path.abspath(path))
    folder, name = image.parent.resolve(), image.name
    stem = os.path.splitext(name)[0]
    if is_image_name(name):
        files, _dirs = _listing(folder)
        # The image, the other images that could share its `<stem>.txt`, and the tags files.
        relevant = [f for f in files if f == name or f.lower().endswith(SIDECAR_SUFFIX)
                    or (is_image_name(f) and os.path.splitext(f)[0] == stem)]
        for item in FolderSource(folder)._read_files(folder, relevant, ROOT_SHARD):
            if item.uri == str(folder / name):
                return item
    return SourceItem(uri=str(image), shard=ROOT_SHARD, data=image.read_bytes())
