"""The statistics of the checks, in numpy: sorting, the two-sample KS statistic and p-values,
PSI, chi-square homogeneity and its tail.

Every other module in :mod:`closedloop.domain.checks` builds on these; this one imports none of
them. ``scipy.stats`` costs ~0.5 s (and ``scipy.special`` ~0.3 s) to import, more than the tests
themselves on most windows. The functions here reproduce scipy's results
(``scipy.stats.ks_2samp(method="auto")``, ``scipy.stats.chi2.sf``,
``scipy.stats.chi2_contingency(correction=False)``) to ~1e-12 relative error, using the same
algorithms:

:func:`ks_two_sample_p`
    Both samples of at most ``KS_EXACT_MAX_N`` values: the exact distribution. For equal sizes
    scipy's "outside the square" alternating sum (Hodges 1958), for unequal sizes the lattice
    path recursion scipy compiles (:func:`_prob_outside_band`, one vectorised anti-diagonal at a
    time, ~10 us each, so ~0.1 s for 5,000 against 4,000 values), both to the last bit.
    Otherwise (or when the exact computation fails, as scipy does): the one-sample Kolmogorov
    distribution ``kstwo.sf(D, round(n*m/(n+m)))`` of Simard & L'Ecuyer (2011): the
    Ruben-Gambino closed forms at the extremes, ``2 * smirnov(n, D)`` (the exact
    Birnbaum-Tingey sum, evaluated in log space) for ``n D^2 >= 2.2``, 0 from ``n D^2 >= 370``,
    and ``1 - cdf`` with the Durbin matrix (Marsaglia-Tsang-Wang) or Pelz-Good approximation
    below. For ``n <= 140`` in the middle range scipy's Pomeranz recursion is used.

:func:`chi2_sf`
    The upper tail of the chi-square distribution with an integer number of degrees of freedom,
    from the finite sums of the regularised incomplete gamma function (all terms positive, so no
    cancellation), in log space.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

KS_EXACT_MAX_N = 10_000
"""``scipy.stats.ks_2samp(method="auto")`` is exact when both samples are at most this large."""
PSI_EPS = 1e-4
"""Bin frequencies below this are raised to it before computing PSI (no log of zero)."""
_KS_DIRECT_MAX_N = 4096
"""Pooled sizes up to this evaluate the KS ECDFs at every value; larger ones branch and bound."""
_KS_GRID_STEP = 64
"""Every this-many-th sorted value of each sample is a grid point of the KS branch and bound."""

_E128 = 128
_EP128 = float(np.ldexp(1.0, _E128))
_EM128 = float(np.ldexp(1.0, -_E128))
_LOG_2PI = math.log(2 * math.pi)
_SQRT2PI = math.sqrt(2 * math.pi)
_MIN_LOG = -708
_PI_SQUARED = math.pi**2
_PI_FOUR = math.pi**4
_PI_SIX = math.pi**6
_STIRLING_COEFFS = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
]


# --------------------------------------------------------------------------------------------
# Two-sample KS
# --------------------------------------------------------------------------------------------


def ks_two_sample_p(n1: int, n2: int, d: float) -> tuple[float, float]:
    """``(D, p)`` of a two-sided two-sample KS statistic ``d`` with sample sizes ``n1``/``n2``, as
    ``scipy.stats.ks_2samp`` computes them (in its exact branch ``D`` is rounded to the lattice
    ``h / lcm(n1, n2)``; so is the returned ``D``)."""
    if max(n1, n2) <= KS_EXACT_MAX_N:
        ok, d_lattice, p = _exact(n1, n2, d)
        if ok:
            return d_lattice, p
        d = d_lattice
    en = n1 * n2 / (n1 + n2)
    return d, kolmogorov_sf(round(en), d)


def _exact(n1: int, n2: int, d: float) -> tuple[bool, float, float]:
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    h = int(np.round(d * lcm))
    d = h * 1.0 / lcm
    if h == 0:
        return True, d, 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        p = _prob_outside_square(n1, h) if n1 == n2 else _prob_outside_band(n1, n2, g, h)
    if not (0.0 <= p <= 1.0):
        return False, d, p
    return True, d, p


def _prob_outside_square(n: int, h: int) -> float:
    """``P(D_{n,n} >= h/n)``: 2 * (A0 (1 - A1 (1 - A2 (...)))) with ``Ak`` the ratio of
    ``binom(2n, n - k h)`` terms (scipy's Horner form, no subtractive cancellation)."""
    total = 0.0
    j = np.arange(h, dtype=np.float64)
    for k in range(n // h, -1, -1):
        ratio = float(np.prod((n - k * h - j) / (n + k * h + j + 1)))
        total = ratio * (1.0 - total)
    return 2 * total


def _prob_outside_band(n1: int, n2: int, g: int, h: int) -> float:
    """``P(D_{n1,n2} >= h / lcm)`` for unequal sizes: the share of the monotone lattice paths
    from ``(0, 0)`` to ``(m, n)`` (``m >= n``) that leave the band ``|n x - m y| / g < h``.

    The complement recursion of Viehmann (2021, arXiv:2102.08037), as scipy evaluates it:
    ``B(x, y)``, the share of the paths to ``(x, y)`` that have left the band, is 1 outside it
    and ``(x B(x-1, y) + y B(x, y-1)) / (x + y)`` inside (``B(0, 0) = 0``); every value lies in
    ``[0, 1]``, so nothing overflows. Each cell depends only on the previous anti-diagonal, so
    the recursion runs one anti-diagonal ``x + y = s`` at a time, vectorised over the cells of
    the band on it. Each cell is computed with scipy's arithmetic, in the same operation order,
    so the result equals ``scipy.stats.ks_2samp(method="exact")``'s to the last bit.
    """
    m, n = max(n1, n2), min(n1, n2)
    mg, ng = m // g, n // g
    # prev[x + 1] is B(x, s - 1) on the previous anti-diagonal, cur[x + 1] B(x, s - 2); slot 0
    # is x = -1 (its coefficient is 0). Slots outside an anti-diagonal's band hold 1.
    prev, cur = np.ones(m + 2), np.ones(m + 2)
    prev[1] = 0.0  # s = 0: the origin, inside the band
    xs = np.arange(-1, m + 1, dtype=np.float64)
    band_prev, band_before = (0, 1), (0, 0)
    for s in range(1, m + n + 1):
        # the cells (x, s - x) with |(ng + mg) x - mg s| < h and max(0, s - n) <= x <= min(m, s)
        lo = max((mg * s - h) // (ng + mg) + 1, s - n, 0)
        hi = min(-(-(mg * s + h) // (ng + mg)), min(m, s) + 1)
        if hi <= lo:  # every path leaves the band
            return 1.0
        x = xs[lo + 1 : hi + 1]
        cur[band_before[0] + 1 : band_before[1] + 1] = 1.0
        cur[lo + 1 : hi + 1] = (prev[lo:hi] * x + prev[lo + 1 : hi + 1] * (s - x)) / s
        prev, cur = cur, prev
        band_before, band_prev = band_prev, (lo, hi)
    return float(prev[m + 1])


# --------------------------------------------------------------------------------------------
# One-sample Kolmogorov distribution (survival function)
# --------------------------------------------------------------------------------------------


def kolmogorov_sf(n: int, x: float) -> float:
    """``P(D_n > x)`` of the one-sample two-sided KS statistic: ``scipy.stats.kstwo.sf(x, n)``."""
    if x >= 1.0:
        return 0.0
    if x <= 0.0:
        return 1.0
    t = n * x
    if t <= 1.0:  # Ruben-Gambino: 1/2n <= x <= 1/n
        if t <= 0.5:
            return 1.0
        if n <= 140:
            prob = float(np.prod(np.arange(1, n + 1) * (1.0 / n) * (2 * t - 1)))
        else:
            prob = math.exp(_log_nfactorial_div_n_pow_n(n) + n * math.log(2 * t - 1))
        return _clip(1.0 - prob)
    if t >= n - 1:  # Ruben-Gambino
        return _clip(2 * (1.0 - x) ** n)
    if x >= 0.5:
        return _clip(2 * smirnov_sf(n, x))
    nxsquared = t * x
    if n <= 140:
        if nxsquared <= 0.754693:
            return _clip(1.0 - _durbin_cdf(n, x))
        if nxsquared <= 4:
            return _scipy_kstwo_sf(n, x)
        return _clip(2 * smirnov_sf(n, x))
    if nxsquared >= 370.0:
        return 0.0
    if nxsquared >= 2.2:
        return _clip(2 * smirnov_sf(n, x))
    if n <= 100_000 and n * x**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, x))
    return _clip(1.0 - _pelz_good_cdf(n, x))


def smirnov_sf(n: int, x: float) -> float:
    """``P(D_n^+ >= x)`` of the one-sided KS statistic (``scipy.special.smirnov``), by the
    Birnbaum-Tingey sum ``x * sum_j C(n, j) (x + j/n)^(j-1) (1 - x - j/n)^(n-j)`` evaluated in
    log space (every term is positive)."""
    if x >= 1.0:
        return 0.0
    if x <= 0.0:
        return 1.0
    nx = n * x
    last = math.floor(n * (1.0 - x))
    if n - last - nx <= 0:  # the last term's base is 0 (n (1 - x) is an integer)
        last -= 1
    j = np.arange(last + 1, dtype=np.float64)
    log_binom = np.concatenate([[0.0], np.cumsum(np.log((n - j[1:] + 1.0) / j[1:]))])
    with np.errstate(divide="ignore"):
        logs = log_binom + (j - 1.0) * np.log((j + nx) / n) + (n - j) * np.log((n - j - nx) / n)
    top = float(np.max(logs))
    return float(x * math.exp(top) * np.sum(np.exp(logs - top)))


def _scipy_kstwo_sf(n: int, x: float) -> float:
    """The Pomeranz recursion for small ``n`` (rare here): scipy's, imported on first use."""
    from scipy.stats import kstwo

    return float(kstwo.sf(x, n))


def _log_nfactorial_div_n_pow_n(n: int) -> float:
    rn = 1.0 / n
    return math.log(n) / 2 - n + _LOG_2PI / 2 + rn * float(np.polyval(_STIRLING_COEFFS, rn / n))


def _durbin_cdf(n: int, d: float) -> float:
    """``P(D_n <= d)`` by Durbin's matrix (Marsaglia, Tsang & Wang 2003), as scipy computes it."""
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = int(np.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    matrix = np.zeros([m, m])
    intm = np.arange(1, m + 1)
    v = 1.0 - h**intm
    w = np.empty(m)
    fac = 1.0
    for j in intm:
        w[j - 1] = fac
        fac /= j
        v[j - 1] *= fac
    tt = max(2 * h - 1.0, 0) ** m - 2 * h**m
    v[-1] = (1.0 + tt) * fac
    for i in range(1, m):
        matrix[i - 1 :, i] = w[: m - i + 1]
    matrix[:, 0] = v
    matrix[-1, :] = np.flip(v, axis=0)
    power = np.eye(m)
    remaining, expnt, matrix_expnt = n, 0, 0
    while remaining > 0:
        if remaining % 2:
            power = np.matmul(power, matrix)
            expnt += matrix_expnt
        matrix = np.matmul(matrix, matrix)
        matrix_expnt *= 2
        if np.abs(matrix[k - 1, k - 1]) > _EP128:
            matrix /= _EP128
            matrix_expnt += _E128
        remaining //= 2
    p = float(power[k - 1, k - 1])
    # times n! / n^n, in log space (scipy multiplies term by term with rescaling)
    if p <= 0.0:
        return 0.0
    log_p = math.log(p) + expnt * math.log(2.0) + _log_nfactorial(n) - n * math.log(n)
    return _clip(math.exp(log_p))


def _log_nfactorial(n: int) -> float:
    return math.lgamma(n + 1.0)


def _pelz_good_cdf(n: int, x: float) -> float:
    """The Pelz-Good (1976) approximation of ``P(D_n <= x)``, as scipy computes it."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    z = math.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z**2, z**3, z**4, z**6
    qlog = -_PI_SQUARED / 8 / zsquared
    if qlog < _MIN_LOG:
        return 0.0
    q = math.exp(qlog)
    k1a, k1b = -zsquared, _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z**8
    terms = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        msquared, mfour, msix = m**2, m**4, m**6
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * msquared,
                k2a + k2b * msquared + k2c * mfour,
                k3a + k3b * msquared + k3c * mfour + k3d * msix,
            ]
        )
        terms *= np.power(q, 8 * k)
        terms += coeffs
    terms *= q * _SQRT2PI
    terms /= np.array([z, 6 * zfour, 72 * z**7, 6480 * z**10])
    q = math.exp(-_PI_SQUARED / 2 / zsquared)
    ks = np.arange(maxk, 0, -1)
    ksquared = ks**2
    sqrt3z = math.sqrt(3) * z
    kspi = np.pi * ks
    qpowers = q**ksquared
    terms[2] += float(np.sum(ksquared * qpowers)) * _PI_SQUARED * _SQRT2PI / (-36 * zthree)
    terms[3] += (
        float(np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpowers))
        * _PI_SQUARED
        * _SQRT2PI
        / (216 * zsix)
    )
    terms /= np.power(n * 1.0, np.arange(4) / 2.0)
    return float(np.sum(terms))


def _clip(p: Any) -> float:
    return float(min(max(float(p), 0.0), 1.0))


# --------------------------------------------------------------------------------------------
# Chi-square
# --------------------------------------------------------------------------------------------


def chi2_sf(statistic: float, dof: int) -> float:
    """``P(X > statistic)`` for ``X ~ chi2(dof)`` with an integer ``dof >= 1``
    (``scipy.stats.chi2.sf``), i.e. the regularised upper incomplete gamma ``Q(dof/2, x/2)``.

    Even ``dof = 2a``: ``Q = exp(-y) sum_{k<a} y^k / k!``; odd ``dof = 2a + 1``:
    ``Q = erfc(sqrt y) + exp(-y) sum_{k<a} y^(k+1/2) / Gamma(k + 3/2)``, with ``y = x/2``. All
    terms are summed relative to the largest one, so deep tails keep full relative accuracy.
    """
    if not statistic > 0.0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    y = statistic / 2.0
    half, odd = divmod(int(dof), 2)
    k = np.arange(half, dtype=np.float64)
    if odd:
        shifts = k + 0.5
        logs = -y + shifts * math.log(y) - _lgamma(shifts + 1.0)
        logs = np.concatenate([[_log_erfc_sqrt(y)], logs])
    else:
        logs = -y + k * math.log(y) - _lgamma(k + 1.0)
    if logs.size == 0:
        return 1.0
    top = float(np.max(logs))
    if top < -745.2:
        return 0.0
    return _clip(math.exp(top) * float(np.sum(np.exp(logs - top))))


def _lgamma(values: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(float(v)) for v in values], dtype=np.float64)


def _log_erfc_sqrt(y: float) -> float:
    """``log(erfc(sqrt(y)))``, also where ``erfc`` underflows (continued fraction of erfcx)."""
    z = math.sqrt(y)
    if z < 25.0:
        value = math.erfc(z)
        return math.log(value) if value > 0 else -math.inf
    # erfc(z) = exp(-z^2) / sqrt(pi) * 1 / (z + 1/2 / (z + 1 / (z + 3/2 / (z + ...))))
    fraction = z
    for n in range(60, 0, -1):
        fraction = z + (n / 2.0) / fraction
    return -y - 0.5 * math.log(math.pi) - math.log(fraction)


# --------------------------------------------------------------------------------------------
# Sorting, the KS statistic and its p-values, PSI, chi-square homogeneity
# --------------------------------------------------------------------------------------------


def psi(reference_counts: np.ndarray, current_counts: np.ndarray, *, eps: float = PSI_EPS) -> float:
    """Population Stability Index of two count vectors over the same bins.

    ``PSI = sum((q - p) * ln(q / p))`` with ``p``/``q`` the reference/current bin frequencies,
    each raised to at least ``eps`` (default 1e-4) so empty bins contribute a large but finite
    term. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    p = np.maximum(ref / max(ref.sum(), 1.0), eps)
    q = np.maximum(cur / max(cur.sum(), 1.0), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def sorted_finite(values: np.ndarray) -> np.ndarray:
    """The finite values of a 1-D array as a sorted float64 array (NaN and +-inf dropped)."""
    column = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(column)
    if not finite.all():
        column = column[finite]  # a copy, sorted in place below
        column.sort()
        return column
    return np.sort(column)


def ks_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample KS statistic ``D = sup_x |F_a(x) - F_b(x)|`` of two sorted, finite,
    non-empty float arrays; bit-for-bit the value ``scipy.stats.ks_2samp`` computes.

    The ECDFs are right-continuous, so ``D`` is attained at one of the pooled values ``x``
    with ``F(x) = searchsorted(sorted, x, side="right") / n`` (exact for ties). Evaluating that
    at all ``n + m`` values costs ``O((n + m) log(n + m))`` random memory accesses, so large
    samples are searched branch-and-bound: both ECDFs are evaluated exactly at a grid of every
    ``_KS_GRID_STEP``-th value of each sample, giving a lower bound ``L`` on ``D``; inside the
    open interval between two grid values ``g < h`` both ECDFs are monotone, so
    ``|F_a - F_b| <= max(F_a(h-) - F_b(g), F_b(h-) - F_a(g))``; only the few intervals whose
    bound can exceed ``L`` are evaluated value by value. The result is exact, not approximate.
    """
    n1, n2 = a.size, b.size
    step = _KS_GRID_STEP
    if n1 + n2 <= _KS_DIRECT_MAX_N or step <= 1:
        return max(_ks_at(a, a, b), _ks_at(b, a, b))
    grid = np.unique(np.concatenate([a[::step], b[::step], a[-1:], b[-1:]]))
    r1 = np.searchsorted(a, grid, side="right")
    r2 = np.searchsorted(b, grid, side="right")
    low = float(np.max(np.abs(r1 / n1 - r2 / n2)))
    l1 = np.searchsorted(a, grid[1:], side="left")
    l2 = np.searchsorted(b, grid[1:], side="left")
    upper = np.maximum(l1 / n1 - r2[:-1] / n2, l2 / n2 - r1[:-1] / n1)
    open_ = np.flatnonzero(upper >= low - 1e-9)  # margin: rounding can only add work
    if open_.size == 0:
        return low
    inside_a = _ranges(r1[:-1][open_], l1[open_])
    inside_b = _ranges(r2[:-1][open_], l2[open_])
    best = low
    if inside_a.size:
        best = max(best, _ks_at(a[inside_a], a, b))
    if inside_b.size:
        best = max(best, _ks_at(b[inside_b], a, b))
    return best


def _ks_at(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``max |F_a(x) - F_b(x)|`` over the values ``x`` of ``points`` (scipy's arithmetic)."""
    cdf1 = np.searchsorted(a, points, side="right") / a.size
    cdf2 = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf1 - cdf2)))


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(start, stop)`` for every pair (empty ranges skipped)."""
    lengths = np.maximum(stops - starts, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    result: np.ndarray = np.arange(total, dtype=np.int64) + offsets
    return result


def ks_p_values(d: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P-values of two-sided two-sample KS statistics as ``scipy.stats.ks_2samp`` computes them
    with ``method="auto"``. Returns ``(statistic, p_value)``: in the exact branch scipy rounds
    ``D`` to the lattice ``h / lcm(n1, n2)``, and so does this function."""
    d = np.asarray(d, dtype=np.float64).copy()
    n1 = np.asarray(n1, dtype=np.int64)
    n2 = np.asarray(n2, dtype=np.int64)
    p = np.full(d.shape, np.nan)
    for j in np.flatnonzero(~np.isnan(d)):
        d[j], p[j] = ks_two_sample_p(int(n1[j]), int(n2[j]), float(d[j]))
    return d, np.clip(p, 0.0, 1.0)


def chi2_homogeneity(observed: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square statistic and p-value of an r x k contingency table whose row and
    column sums are all positive; equals ``scipy.stats.chi2_contingency(observed,
    correction=False)`` (statistic 0 and p-value 1 when there is a single category)."""
    observed = np.asarray(observed, dtype=np.float64)
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    if dof == 0:
        return 0.0, 1.0
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    statistic = float((((observed - expected) ** 2) / expected).sum())
    return statistic, chi2_sf(statistic, dof)


__all__ = [
    "KS_EXACT_MAX_N",
    "PSI_EPS",
    "chi2_homogeneity",
    "chi2_sf",
    "kolmogorov_sf",
    "ks_p_values",
    "ks_sorted",
    "ks_two_sample_p",
    "psi",
    "smirnov_sf",
    "sorted_finite",
]
