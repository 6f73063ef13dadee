-- =============================================================================================
-- Indexes for the monitoring queries: newest users, latest conversations (latest events are
-- served by events_created_at_idx, 20261128110000_events_archive.sql, scanned backwards).
--
--   select * from identity.users order by created_at desc limit 5;
--   select id, user_id, workflow_name, started_at from identity.conversations
--     order by started_at desc limit 5;
--   select user_id, event_type, created_at from identity.events order by created_at desc limit 10;
--
-- Each becomes a Limit over an index scan that stops after N entries, instead of a sequential
-- scan and a sort of the whole table (supabase/tests/06-monitoring-plans.sql asserts the plans).
-- The per-user indexes cannot serve these: their leading column is user_id.
-- =============================================================================================

create index users_created_at_idx on identity.users (created_at desc);
comment on index identity.users_created_at_idx is 'Newest users first (monitoring).';

create index conversations_started_at_idx on identity.conversations (started_at desc);
comment on index identity.conversations_started_at_idx is
  'Latest conversations first, across users (monitoring).';
