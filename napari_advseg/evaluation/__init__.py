"""Metrics, evaluation of models on cohorts, and reports."""
