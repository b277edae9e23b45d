"""Image features for detectors, plots and explanations: spectra of images and their residuals,
and self-descriptions (how each image predicts itself).

>>> extract = create_features("fft+npr", n_bins=32, channels="rgb")
>>> rows = extract(images)  # float64 (N, extract.n_features), any image sizes, no resizing
"""

from forensics.features.dct import dct_spectra, tile_log_dct
from forensics.features.registry import (
    FeatureExtractor,
    create_features,
    feature_parameters,
    list_features,
)
from forensics.features.residual import (
    highpass_residual,
    npr_residual,
    npr_spectra,
    residual_spectra,
)
from forensics.features.selfdescription import self_descriptions
from forensics.features.spectrum import (
    FEATURE_TILE,
    TILED_ABOVE,
    azimuthal_spectra,
    azimuthal_spectrum,
    check_rgb_image,
    image_planes,
    log_power_spectrum,
    spectrum_radius,
    to_grey,
)

__all__ = [
    "FEATURE_TILE",
    "TILED_ABOVE",
    "spectrum_radius",
    "check_rgb_image",
    "to_grey",
    "image_planes",
    "log_power_spectrum",
    "azimuthal_spectrum",
    "azimuthal_spectra",
    "highpass_residual",
    "npr_residual",
    "residual_spectra",
    "npr_spectra",
    "tile_log_dct",
    "dct_spectra",
    "self_descriptions",
    "FeatureExtractor",
    "create_features",
    "feature_parameters",
    "list_features",
]
