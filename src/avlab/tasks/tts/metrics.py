"""TTS metrics outside torchmetrics: mel-cepstral distortion with DTW, duration checks.

MCD here, every parameter stated:
    input        log-mel, natural log of the floored mel power (80 bands, the data's features),
                 not normalised
    cepstrum     DCT-II along the mel axis, orthonormal (`scipy.fft.dct(type=2, norm="ortho")`),
                 coefficients c1..c13 kept (13 coefficients, c0 = overall energy dropped)
    frame cost   (10 * sqrt(2) / ln 10) * sqrt(sum_d (c_d - c'_d)^2)   (dB, the usual constant)
    alignment    DTW over the frame costs, steps (1,0), (0,1), (1,1) with equal weights
    MCD          the mean frame cost along the DTW path (path-length normalised)
A log-mel cepstrum is not the mel-generalised cepstrum of SPTK, so the values are comparable
between runs and models here, not with MCD figures in papers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

MCD_CONSTANT = 10.0 * math.sqrt(2.0) / math.log(10.0)
N_CEPSTRA = 13
DURATION_BAR = (0.8, 1.25)


def mel_cepstrum(log_mel: np.ndarray, n_cepstra: int = N_CEPSTRA) -> np.ndarray:
    """(frames, n_mels) natural-log mel -> (frames, n_cepstra) cepstra c1..c_n (c0 dropped)."""
    return dct(np.asarray(log_mel, dtype=np.float64), type=2, norm="ortho", axis=-1)[
        :, 1 : n_cepstra + 1
    ]


def dtw_mean_cost(cost: np.ndarray) -> float:
    """Mean cost along the cheapest monotonic path through a (N, M) cost matrix.

    Accumulates along anti-diagonals (vectorised), tracking each cell's path length so the
    mean is over the path actually taken.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    length = np.zeros((n + 1, m + 1))
    total[0, 0] = 0.0
    for diag in range(2, n + m + 1):
        i = np.arange(max(1, diag - m), min(n, diag - 1) + 1)
        j = diag - i
        candidates = np.stack([total[i - 1, j], total[i, j - 1], total[i - 1, j - 1]])
        lengths = np.stack([length[i - 1, j], length[i, j - 1], length[i - 1, j - 1]])
        best = np.argmin(candidates, axis=0)
        cols = np.arange(len(i))
        total[i, j] = candidates[best, cols] + cost[i - 1, j - 1]
        length[i, j] = lengths[best, cols] + 1
    return float(total[n, m] / length[n, m])


def mcd_dtw(reference: np.ndarray, generated: np.ndarray) -> float:
    """Mel-cepstral distortion (dB) between two (frames, n_mels) log-mels, aligned by DTW."""
    ref, gen = mel_cepstrum(reference), mel_cepstrum(generated)
    diff = ref[:, None, :] - gen[None, :, :]
    return dtw_mean_cost(MCD_CONSTANT * np.sqrt((diff**2).sum(-1)))


def duration_summary(ratios: list[float], failures: list[bool]) -> dict[str, float]:
    """Median ratio, share within DURATION_BAR, share of stop failures."""
    ratios_arr = np.asarray(ratios, dtype=np.float64)
    low, high = DURATION_BAR
    return {
        "duration_ratio": float(np.median(ratios_arr)),
        "duration_ok": float(((ratios_arr >= low) & (ratios_arr <= high)).mean()),
        "stop_failures": float(np.mean(failures)),
    }
