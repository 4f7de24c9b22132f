"""A local venue server speaking Binance's real protocol, for development, demos and chaos tests.

* :mod:`~ccf.venue_server.server`: the aiohttp server (endpoints, shared feed, fault injection).
* :mod:`~ccf.venue_server.config`: :class:`~ccf.venue_server.config.ServerConfig`, what it serves and how.
* :mod:`~ccf.venue_server.connection`: one websocket connection, its queue (:mod:`~ccf.venue_server.outbox`) and
  its sender.
* :mod:`~ccf.venue_server.feeds`: what it serves: the synthetic market (:mod:`ccf.synthetic`) or capture replay.
* :mod:`~ccf.venue_server.replay_book`: the replay's REST books, synced to the stream as a client would.
* :mod:`~ccf.venue_server.binance_wire`: records written as Binance's messages.
* :mod:`~ccf.venue_server.faults`: the faults and their spec syntax.
* :mod:`~ccf.venue_server.runner`: running it in a background thread (tests) or the foreground (CLI).
* :mod:`~ccf.venue_server.cli`: ``ccf venue-server serve``.
"""
