"""deploystack: one YAML spec in, a production-shaped Django stack out.

Kept free of imports: APC images copy this package's contrib/ alone, next to this file.
"""

__version__ = "0.1.0"
