"""The one encoding of a training state (optimizers, scalers, RNG states, counters) for files
that execute nothing on load: its tensors go to a safetensors file, the rest to JSON.

Generator checkpoints and detector training states both store their trees this way. Importing
this module is cheap (torch is imported on first use), so that code which only reads JSON
need not load torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crashsafe.files import LeafStore, decode_tree, encode_tree, read_checked

if TYPE_CHECKING:
    import torch

__all__ = ["encode_state", "decode_state", "load_checked"]


def encode_state(tree: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a tree of dicts (any JSON-scalar keys), lists, tuples, tensors, numpy arrays and
    JSON scalars into ``{dotted path: tensor}`` (CPU copies) and a JSON skeleton whose
    ``{"$tensor": path}`` leaves point into it (``{"$ndarray": ...}`` around an array's);
    :func:`decode_state` inverts it exactly. Raises TypeError for any other node."""
    import numpy as np
    import torch

    def copy(node: Any) -> torch.Tensor | None:
        if isinstance(node, np.ndarray):
            node = torch.from_numpy(np.ascontiguousarray(node))
        return node.detach().cpu().clone().contiguous() if torch.is_tensor(node) else None

    tensors = LeafStore(copy, "tensors, arrays, numbers, strings, lists and dicts")

    def leaf(node: Any, where: str) -> dict:
        stand_in = tensors(node, where)
        return {"$ndarray": stand_in} if isinstance(node, np.ndarray) else stand_in

    skeleton = encode_tree(tree, leaf)
    return dict(tensors), skeleton


def decode_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """The tree :func:`encode_state` split into ``tensors`` and ``skeleton``."""
    def leaf(stand_in: dict) -> Any:
        if "$ndarray" in stand_in:
            return leaf(stand_in["$ndarray"]).numpy()
        return tensors[stand_in["$tensor"]]

    return decode_tree(skeleton, leaf)


def load_checked(path: str | os.PathLike, expected_sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, parsed only after its bytes matched
    ``expected_sha256`` (parsing runs no code). Raises FileNotFoundError,
    ``crashsafe.files.ChecksumError`` or ``safetensors.SafetensorError``; each caller words its
    own advice."""
    from safetensors.torch import load

    return load(read_checked(path, expected_sha256))
