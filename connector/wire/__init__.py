"""Redis connections, shared by the service and the consumer toolkit.

``client`` makes redis-py clients from the settings, ``resp`` is the hand-encoded connection of
the hot paths, ``cluster`` its per-master pipelines on a Redis Cluster, ``errors`` reads an error
reply the same whichever of them parsed it.
"""
