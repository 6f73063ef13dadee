"""Conversation archiving: the Redis layout, its writer, and the archiver worker.

Parts, one concern each: ``_finder`` (due conversations), ``_leases`` (claims), ``_reader``
(pipelined reads), ``_rows`` (pure row building), ``_writer`` (batched upserts and marks),
``_linker`` (late linking), ``_worker`` (run loop, heartbeat, health, counters), coordinated by
``_archiver.ConversationArchiver``. Key names live in ``supabase_identity._redis_keys``.
"""

from .._redis_keys import DUE_KEY, conversation_key, merchant_key, message_key, session_key
from ._archiver import ConversationArchiver, archive_conversation
from ._layout import ConversationStore
from ._types import ArchiverConfig, ArchiveReport
from ._worker import Health, check_health

__all__ = [
    "DUE_KEY",
    "ArchiveReport",
    "ArchiverConfig",
    "ConversationArchiver",
    "ConversationStore",
    "Health",
    "archive_conversation",
    "check_health",
    "conversation_key",
    "merchant_key",
    "message_key",
    "session_key",
]
