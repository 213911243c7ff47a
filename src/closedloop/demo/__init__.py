"""The built-in demo: the whole loop on simulated loan data (``closedloop demo``)."""
