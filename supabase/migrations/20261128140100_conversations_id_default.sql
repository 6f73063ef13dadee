-- =============================================================================================
-- conversations.id: a random UUID when an INSERT gives none.
--
-- The archiver always sends the id (the conversation's own UUID, or a UUIDv5 of a non-UUID
-- Redis id); a row inserted by hand, as the original SQL-editor test inserts do, gets one here
-- instead of failing on the NOT NULL primary key.
-- =============================================================================================

alter table identity.conversations alter column id set default gen_random_uuid();

comment on column identity.conversations.id is
  'The conversation id, or a deterministic UUIDv5 of it when the Redis id was not a UUID; a '
  'random UUID for rows inserted without one.';
