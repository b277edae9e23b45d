"""GAN forensics: safe image I/O, corpora, spectral and CNN detectors, evaluation."""
__version__ = "0.1.0"
