"""Recorded market data: format readers (:mod:`ccf.capture.readers`), the venue registry they dispatch on
(:mod:`ccf.capture.registry`) and book replays (:mod:`ccf.capture.replay`)."""
