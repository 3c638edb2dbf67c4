"""Prompt sets, text parsing, the activation store and its extraction."""
