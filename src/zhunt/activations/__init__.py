"""Analyses of stored hidden states: Phase 2, theory tests, R(k), MMD and ARD."""
