"""The report layer: Markdown tables, verdict texts and figures rendered from computed results.

Modules here take the frames and dataclasses the science functions return and render them; they
compute nothing new and open no model or store.
"""
