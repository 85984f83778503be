"""The service's Redis side: entries in, stored batches out.

``schema`` is the stream schema (keys, entries and their fields), ``publisher`` buffers and
group-commits, ``writer`` chooses entry ids and stores batches, ``registry`` provisions streams
and announces them, ``groups`` is the consumer-group declaration syntax, ``lease`` holds the
prefix, ``inventory`` is ``connector streams``.
"""
