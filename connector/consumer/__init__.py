"""The public consumer toolkit: a member of a consumer group on the connector's streams.

    from connector.consumer import GroupConsumer, Message

Every parameter, the ``Message`` fields and the delivery guarantee: docs/toolkit.md.
``connector consume`` (``command``) is the toolkit as a command.
"""

from connector.consumer.group import (
    ConsumerStats,
    DeadLetter,
    GroupConsumer,
    Handler,
    Message,
    default_name,
)

__all__ = ["ConsumerStats", "DeadLetter", "GroupConsumer", "Handler", "Message", "default_name"]
