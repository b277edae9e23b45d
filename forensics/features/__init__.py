"""Image features for detectors, plots and explanations."""

from forensics.features.spectrum import (
    azimuthal_spectra,
    azimuthal_spectrum,
    check_rgb_image,
    log_power_spectrum,
    to_grey,
)

__all__ = [
    "check_rgb_image",
    "to_grey",
    "log_power_spectrum",
    "azimuthal_spectrum",
    "azimuthal_spectra",
]
