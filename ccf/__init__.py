"""CCF: real-time crypto-currency forecasting. Importing this package does nothing but define names."""

from __future__ import annotations

__version__ = "0.1.0"
