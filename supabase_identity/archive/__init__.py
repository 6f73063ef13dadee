"""Conversation archiving: the Redis layout, its writer, and the archiver worker."""

from ._archiver import ArchiverConfig, ArchiveReport, ConversationArchiver, archive_conversation
from ._layout import (
    DUE_KEY,
    ConversationStore,
    conversation_key,
    merchant_key,
    message_key,
    session_key,
)

__all__ = [
    "DUE_KEY",
    "ArchiveReport",
    "ArchiverConfig",
    "ConversationArchiver",
    "ConversationStore",
    "archive_conversation",
    "conversation_key",
    "merchant_key",
    "message_key",
    "session_key",
]
