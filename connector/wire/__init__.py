"""Redis connections, shared by the service and the consumer toolkit.

``client`` makes redis-py clients from the settings, ``resp`` is the hand-encoded connection of
the hot paths, ``cluster`` its per-master pipelines on a Redis Cluster, ``pipe`` the one place
that chooses between those and redis-py, ``errors`` reads an error reply the same whichever of
them parsed it.
"""
