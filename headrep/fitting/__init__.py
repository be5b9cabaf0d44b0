"""Tracking and fitting: decoding, landmarks, dense targets, losses, the staged fitter, synthetic ground truth,
and `fit_video` (video → HeadRep)."""

from headrep.fitting.config import FitConfig
from headrep.fitting.fitter import FitResult, Fitter, fit
from headrep.fitting.pipeline import fit_video

__all__ = ["FitConfig", "FitResult", "Fitter", "fit", "fit_video"]
