"""Experiments on top of single runs: sweeps, reports, and the science modules (elbow, advice, drift, toy)."""
