"""connector: the Trading API market-data session into Redis Streams."""

__version__ = "1.0.0"
