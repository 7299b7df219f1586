"""Evaluation: OOD scorers and metrics, linear probe, feature extraction, plots, statistics.

Import the submodules directly (e.g. ``from eibacl.evaluate.ood_metrics import ood_report``);
this package does not re-export them so that importing it stays cheap (no matplotlib).
"""
