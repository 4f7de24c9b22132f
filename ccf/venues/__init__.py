"""One module per venue: constants, raw message shapes, pure ``parse_*`` functions into :mod:`ccf.schemas`."""
