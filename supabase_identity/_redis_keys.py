"""Every Redis key the package reads or writes, and every Lua script it runs.

One module owns the names (as arq's ``constants.py`` does), so a key format is written once.

Contract keys, written by the agents service (their names are fixed)::

    conversation:<id>          hash    metadata; `archived`, `archived_count`, `archived_at`
                                       written by the archiver; its TTL is the archiver's deadline
    session:<id>               hash    user_id, merchant_id, workflow_name, started_at, …
    message:<id>:<seq>         hash    sender, content, timestamp (or one JSON string)
    merchant:<shop_domain>     string  JSON with user_id (written at OAuth completion)

Package keys::

    identity:archive:due               zset    conversation id -> expiry epoch (0: ended)
    identity:archive:lease:<id>        string  the worker holding the conversation (short TTL,
                                               renewed by its owner while it lives)
    identity:archive:unlinked          hash    archived without a user, to link later
    identity:archive:dead              hash    conversation id -> why it was not archived
    identity:archive:stats             hash    cumulative counters
    identity:archive:heartbeats        hash    worker id -> JSON heartbeat (with its expiry)
    {identity:outbox:events}           list    pending events (and :processing, :dead, :lock)
    identity:user:<user_id>:conversations  set  the user's live conversation ids (written by
                                               ConversationStore; what a shop redaction deletes)
    {identity:compliance}:pending      hash    shop domain -> JSON of a shop/redact not yet done
    {identity:compliance}:seen:<id>    string  a webhook id already taken (redelivery guard)
    {identity:compliance}:lease:<shop> string  the process carrying out that redaction now

Redis Cluster: a conversation's contract keys hash to different slots, so no script and no
MULTI spans them: every script here touches one key, except the outbox's, whose keys share the
hash tag ``{…}``. The outbox's names before the hash tag (``identity:outbox:events``,
``…:processing``) are still drained (:data:`LEGACY_OUTBOX_SUFFIXES`).
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------- contract keys

CONVERSATION_PREFIX: Final = "conversation:"
SESSION_PREFIX: Final = "session:"
MESSAGE_PREFIX: Final = "message:"
MERCHANT_PREFIX: Final = "merchant:"


def conversation_key(conversation_id: str) -> str:
    """``conversation:<id>``: the conversation's metadata hash."""
    return CONVERSATION_PREFIX + conversation_id


def session_key(conversation_id: str) -> str:
    """``session:<id>``: the session hash holding user_id and merchant_id."""
    return SESSION_PREFIX + conversation_id


def message_key(conversation_id: str, seq: int) -> str:
    """``message:<id>:<seq>``: one message."""
    return f"{MESSAGE_PREFIX}{conversation_id}:{seq}"


def merchant_key(shop_domain: str) -> str:
    """``merchant:<shop_domain>``: JSON string written at OAuth completion."""
    return MERCHANT_PREFIX + shop_domain


#: SCAN pattern of the conversations the archiver looks for.
CONVERSATION_PATTERN: Final = CONVERSATION_PREFIX + "*"


def conversation_id_of(key: str) -> str:
    """The id in a ``conversation:<id>`` key."""
    return key[len(CONVERSATION_PREFIX) :]


# --------------------------------------------------------------------------- archiver keys

#: Sorted set of conversation ids scored by expiry (epoch seconds); 0 means "ended, archive now".
DUE_KEY: Final = "identity:archive:due"
LEASE_PREFIX: Final = "identity:archive:lease:"
UNLINKED_KEY: Final = "identity:archive:unlinked"
DEAD_LETTER_KEY: Final = "identity:archive:dead"
STATS_KEY: Final = "identity:archive:stats"
HEARTBEATS_KEY: Final = "identity:archive:heartbeats"


def lease_key(conversation_id: str) -> str:
    """``identity:archive:lease:<id>``: which worker holds the conversation right now."""
    return LEASE_PREFIX + conversation_id


#: SCAN pattern of every lease (tests and operators; the archiver never scans for them).
LEASE_PATTERN: Final = LEASE_PREFIX + "*"

# --------------------------------------------------------------------------- per-user index

USER_CONVERSATIONS_PREFIX: Final = "identity:user:"


def user_conversations_key(user_id: str) -> str:
    """``identity:user:<user_id>:conversations``: the user's live conversation ids (a set)."""
    return f"{USER_CONVERSATIONS_PREFIX}{user_id}:conversations"


#: SCAN pattern of the sessions a redaction reads when a conversation is not in the index.
SESSION_PATTERN: Final = SESSION_PREFIX + "*"

# --------------------------------------------------------------------------- compliance keys
# One hash tag: the record script touches the seen marker and the pending hash together.

COMPLIANCE_TAG: Final = "{identity:compliance}"
COMPLIANCE_PENDING_KEY: Final = COMPLIANCE_TAG + ":pending"


def compliance_seen_key(webhook_id: str) -> str:
    """``{identity:compliance}:seen:<webhook id>``: set once a webhook has been taken."""
    return f"{COMPLIANCE_TAG}:seen:{webhook_id}"


def compliance_lease_key(shop_domain: str) -> str:
    """``{identity:compliance}:lease:<shop>``: held while a process redacts that shop."""
    return f"{COMPLIANCE_TAG}:lease:{shop_domain}"


# --------------------------------------------------------------------------- outbox keys

#: Default outbox name; the keys are this inside a hash tag plus a suffix (see ``outbox_keys``).
OUTBOX_NAME: Final = "identity:outbox:events"
OUTBOX_SUFFIXES: Final = ("", ":processing", ":dead", ":lock")
#: Lists written before the keys had a hash tag; drained into the tagged ones.
LEGACY_OUTBOX_SUFFIXES: Final = ("", ":processing")


def outbox_keys(name: str) -> tuple[str, str, str, str]:
    """(pending, processing, dead, lock) of the outbox ``name``, all in one cluster slot.

    A name that already holds a hash tag (``{…}``) is used as it is; any other is wrapped in one.
    """
    base = name if "{" in name and "}" in name.split("{", 1)[1] else "{" + name + "}"
    pending, processing, dead, lock = (base + suffix for suffix in OUTBOX_SUFFIXES)
    return pending, processing, dead, lock


def legacy_outbox_keys(name: str) -> tuple[str, str]:
    """(pending, processing) as written before the hash tag; empty once drained."""
    pending, processing = (name + suffix for suffix in LEGACY_OUTBOX_SUFFIXES)
    return pending, processing


# --------------------------------------------------------------------------- scripts
# Each touches one key (Redis Cluster routes it by that key), except the outbox's (one tag).

#: Marks a conversation archived only if its key still exists (HSET on a vanished key would
#: create an immortal hash) and only upwards (a slower archiver cannot lower the count).
#: KEYS: conversation. ARGV: count, archived_at. Returns 1 when the key exists.
MARK_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'archived_count') or '-1') or -1
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'archived', 'true', 'archived_count', ARGV[1], 'archived_at', ARGV[2])
end
return 1
"""
#: Extends a lease its owner still holds. KEYS: lease. ARGV: worker id, ms. Returns 1 if held.
RENEW_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
#: Releases a lease only if this worker still holds it. KEYS: lease. ARGV: worker id.
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Writes a hash and its TTL together (never an immortal key). KEYS: hash. ARGV: ttl seconds,
#: n, n field/value pairs to set, then pairs set only where absent. Returns message_count (or 0).
PUT_HASH_SCRIPT: Final = """
local n = tonumber(ARGV[2])
local i = 3
while i < 3 + 2 * n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return tonumber(redis.call('HGET', KEYS[1], 'message_count') or '0') or 0
"""
#: Reserves the next message sequence number. KEYS: conversation. ARGV: ttl seconds.
NEXT_SEQ_SCRIPT: Final = """
local count = redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return count - 1
"""
#: Adds a conversation to the due index unless it is already marked ended (score 0).
#: KEYS: due index. ARGV: expires_at, conversation id.
DUE_SCRIPT: Final = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or '1') ~= 0 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""
#: Sets ended_at on a conversation that still exists. KEYS: conversation. ARGV: ended_at.
END_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'ended_at', ARGV[1])
return 1
"""
#: Adds a conversation to its user's index and gives the set the conversation's lifetime (one
#: script: the set never exists without a TTL). KEYS: the index. ARGV: ttl seconds, conversation id.
USER_INDEX_SCRIPT: Final = """
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""
#: HSET the field/value pairs in ARGV on KEYS[1] if it exists; returns 1 if it did.
SET_IF_EXISTS_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  return 1
end
return 0
"""

# Outbox (KEYS share one hash tag). KEYS: pending, processing, lock. ARGV: token, n. Returns the
# batch (an unfinished batch left by a crashed flusher first), or false without the lock.
OUTBOX_CLAIM_SCRIPT: Final = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local inflight = redis.call('LRANGE', KEYS[2], 0, -1)
if #inflight > 0 then return inflight end
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
end
return items
"""
#: KEYS: processing, dead, lock. ARGV: token, dead letters… Deletes the delivered batch.
OUTBOX_ACK_SCRIPT: Final = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if #ARGV > 1 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 2)) end
return 1
"""
#: KEYS: pending, processing, lock. ARGV: token. Puts the batch back at the head, in order.
OUTBOX_RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do redis.call('LPUSH', KEYS[1], items[i]) end
redis.call('DEL', KEYS[2])
return #items
"""
#: KEYS: lock. ARGV: token, ttl_ms (0 deletes). Only the owner may extend or release.
OUTBOX_LOCK_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
#: Removes a user's entries from one outbox list (events, or dead letters holding an event).
#: KEYS: the list. ARGV: user ids. Entries that are not JSON are left for a human. Returns count.
OUTBOX_PURGE_SCRIPT: Final = """
local wanted = {}
for i = 1, #ARGV do wanted[ARGV[i]] = true end
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, data = pcall(cjson.decode, item)
  if ok and type(data) == 'table' then
    local uid = data['user_id']
    local event = data['event']
    if type(uid) ~= 'string' and type(event) == 'table' then uid = event['user_id'] end
    if type(uid) == 'string' and wanted[uid] then
      removed = removed + redis.call('LREM', KEYS[1], 0, item)
    end
  end
end
return removed
"""
#: Takes a webhook once: marks its id seen and, for a redaction, records the shop as pending.
#: KEYS: seen marker, pending hash. ARGV: seen ttl seconds, shop ('' for none), record JSON.
#: Returns 0 when the id was already seen (a redelivery: nothing is written).
COMPLIANCE_RECORD_SCRIPT: Final = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""
