"""The key names and `_metadata` of a PyTorch weights file, read without importing torch or reading a tensor.

Planning (`backbone_normalisations`, when the Snakefile is parsed) needs only which keys a user's weights
file holds and the normalisation it records; `torch.load` would cost the torch import (seconds on a busy
2-core machine) and, for a pre-1.6 file such as torchvision's vgg16-397923af.pth, reading all 553 MB. A
state dict's pickle is a few kilobytes at the start of the file (pre-1.6 format) or one zip member
(`<archive>/data.pkl`), so it is unpickled here with every global refused except the handful a state
dict of tensors is made of, and each tensor replaced by a placeholder. Anything else (a pickled object,
an unknown format) returns None, and the caller falls back to `torch.load(weights_only=True)`, whose
error messages then apply.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

# The pre-1.6 format starts with these pickles: torch.serialization's magic number, its protocol version and
# a dict of system information; the state dict comes next, then the raw storages.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class TensorPlaceholder:
    """Stands in for a tensor of the file: only that it is one matters here."""


def _rebuild_tensor(*args, **kwargs) -> TensorPlaceholder:
    return TensorPlaceholder()


class _StorageType:
    """Stands in for `torch.FloatStorage` and its siblings, named in pre-1.6 persistent ids."""


# The globals a plain state dict of tensors pickles, by (module, name).
_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_tensor,
}


class _NotAStateDict(Exception):
    """The pickle holds something other than a plain state dict of tensors."""


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType
        raise _NotAStateDict(f"{module}.{name}")

    def persistent_load(self, pid):
        return None  # a storage: never read


def _unpickle(stream) -> object:
    return _HeaderUnpickler(stream).load()


def _from_zip(path: str | os.PathLike) -> object:
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(names) != 1:
            raise _NotAStateDict("no single data.pkl")
        with archive.open(names[0]) as stream:
            return _unpickle(stream)


def _from_legacy(path: str | os.PathLike) -> object:
    with open(path, "rb") as stream:
        if _unpickle(stream) != _LEGACY_MAGIC or _unpickle(stream) != _LEGACY_PROTOCOL:
            raise _NotAStateDict("not torch's pre-1.6 format")
        if not isinstance(_unpickle(stream), dict):  # system information
            raise _NotAStateDict("not torch's pre-1.6 format")
        return _unpickle(stream)


def read_header(path: str | os.PathLike) -> Mapping | None:
    """{key: TensorPlaceholder} with the file's `_metadata` attached (as `torch.load` gives it), or None when the
    file is not a plain state dict of tensors in torch's zip or pre-1.6 format (or cannot be read)."""
    try:
        state = _from_zip(path) if zipfile.is_zipfile(path) else _from_legacy(path)
    except (
        _NotAStateDict,
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        zipfile.BadZipFile,
    ):
        return None
    if not isinstance(state, Mapping) or not all(isinstance(value, TensorPlaceholder) for value in state.values()):
        return None
    return state
