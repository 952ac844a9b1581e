"""defectcam: weakly supervised defect localization on DAGM 2007 with class activation maps."""

__version__ = "0.1.0"
