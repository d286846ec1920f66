"""Analyses of trained runs: weight norms (Section 4.4, Figure 1) and the random-label probe (Section 3)."""

from __future__ import annotations

from iat.analysis.norms import layer_norms, matrix_norms, norms_of_runs, norms_table, plot_norms
from iat.analysis.probe import ProbeConfig, fit_random_labels, probe_runs, probe_table

__all__ = ["ProbeConfig", "fit_random_labels", "layer_norms", "matrix_norms", "norms_of_runs", "norms_table",
           "plot_norms", "probe_runs", "probe_table"]
