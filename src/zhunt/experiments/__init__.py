"""Experiments that run the model on prompts: behaviour, patching, DAS, bridge, layer prediction."""
