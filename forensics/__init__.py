"""GAN forensics: safe image I/O, corpora, spectral and CNN detectors, evaluation.

The public API is the modules in ``__all__`` and the names in each one's own ``__all__``
(``from forensics.corpus import Corpus``, ``from forensics import explain``). Importing the
package loads none of them. ``forensics.cli`` is the command line over this API, not part of it;
the modules left out (``ranks``, ``tiles``, ``grid``, ...) are internals of the ones listed.
"""

__version__ = "0.1.0"

__all__ = [
    "aligned",
    "backbones",
    "bundled",
    "corpus",
    "detectors",
    "evaluation",
    "evaluation_results",
    "explain",
    "features",
    "general_recipe",
    "metrics",
    "perturb",
    "pipeline",
    "plots",
    "report",
    "robustness",
    "robustness_results",
    "scan_results",
    "scoring",
    "serving",
    "spectra",
    "training",
    "verdict",
    "zoo_bridge",
]
