"""Example services built on the consumer toolkit (``python -m connector.examples.<name>``)."""
