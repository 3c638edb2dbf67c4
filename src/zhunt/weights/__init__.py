"""Weights-only analyses: Z-masks, structure, weight families, QK operators."""
