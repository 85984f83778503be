"""The Trading API side: frames in, pongs and acks out.

``protocol`` parses and validates frames, ``session`` keeps the WebSocket alive, ``router`` turns
a frame into an entry for the streams, ``run`` follows a backtest run to its outcome, ``rest`` is
the small client of the order endpoints. Entries leave this package through a callable; it never
imports the streams' publisher or the acks.
"""
