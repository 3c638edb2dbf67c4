"""zhunt: hunt a language-agnostic reasoning subspace Z inside language models.

The package holds the science; ``workflow/`` only wires it into Snakemake.
"""

__version__ = "0.1.0"
