"""Acknowledgements: when a stored batch's ``event_ack`` may go out.

``acknowledger`` builds and sends the frames (immediate mode), ``ledger`` is the sans-I/O record
of what each consumer group still has to confirm, ``consumer_gate`` feeds it from Redis
(notifications and group state) in consumer-ack mode.
"""
