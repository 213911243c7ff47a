"""The checks of a window against its reference: statistics, drift, quality, multivariate, verdict.

``stats`` holds the statistical primitives (KS, chi-square, PSI); every other module here
builds on it and none of them imports another in a cycle.
"""
