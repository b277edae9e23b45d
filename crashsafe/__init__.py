"""The lower layer that ``forensics`` and ``generators`` share (neither may import the other).

Import the submodule that holds what you need; importing the package itself loads nothing:

- :mod:`crashsafe.files`: atomic writes, sets of files replaced as one unit, SHA-256 checks,
  JSON-lines logs, the JSON encoding of nested state (standard library only);
- :mod:`crashsafe.images`: the one safe image decoder (:func:`~crashsafe.images.load_image`,
  with its size limits) and PNG writer (numpy, Pillow);
- :mod:`crashsafe.weights`: the one reader of a weights file into a state dict (torch);
- :mod:`crashsafe.corpus_manifest`: the ``manifest.jsonl`` of a corpus folder, its one reader
  and writer;
- :mod:`crashsafe.documents`: versioned JSON documents (a checkpoint's ``config.json``, a
  detector bundle's ``detector.json``, a robustness run's ``run.json``) read and checked for
  their format and version;
- :mod:`crashsafe.runtime`: torch's device, mixed precision, CPU threads and random generators,
  and the C allocator's settings (torch imported on first use);
- :mod:`crashsafe.torchrun`: this process's rank under ``torchrun``, the process group and
  the collectives both libraries use (torch imported on first use);
- :mod:`crashsafe.tensors`: the one encoding of a training state into tensors and JSON.
"""

__all__ = ["corpus_manifest", "documents", "files", "images", "runtime", "tensors", "torchrun",
           "weights"]
