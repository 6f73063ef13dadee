-- =============================================================================================
-- Maintenance functions: archive_old_events, delete_unlinked_conversations, analyze_tables.
-- Recent events and linked conversations are never touched; batches are bounded; dry runs
-- change nothing; bad arguments are refused by name; only the service role may call them; and
-- pg_cron holds the three jobs after `supabase db push` on the local stack.
--
-- The rows below are dated in the 1990s and the cutoff is set at 1995-01-01 (older_than_days is
-- computed from it), so rows that other tests left behind are never eligible here.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(44);

select tests.create_fixture_users();
create temporary table cutoff on commit drop as
  select (current_date - date '1995-01-01') as days;
grant select on cutoff to service_role;

insert into identity.events (id, user_id, event_type, event_data, created_at, received_at) values
  ('01d00000-0000-4000-8000-000000000001', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'old.a', '{"n":1}',
   '1990-01-01 10:00+00', '1990-01-01 10:00:01+00'),
  ('01d00000-0000-4000-8000-000000000002', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'old.b', '{"n":2}',
   '1990-02-01 10:00+00', '1990-02-01 10:00:01+00'),
  ('01d00000-0000-4000-8000-000000000003', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'old.c', '{"n":3}',
   '1990-03-01 10:00+00', '1990-03-01 10:00:01+00'),
  ('0e000000-0000-4000-8000-000000000001', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'recent', '{}',
   '1999-01-01 10:00+00', '1999-01-01 10:00+00');

insert into identity.conversations (id, user_id, started_at, messages, metadata, created_at) values
  -- unlinked long enough: deleted
  ('c1d00000-0000-4000-8000-000000000001', null, '1990-01-01 09:00+00',
   '[{"content":"a"},{"content":"b"}]', '{"pending_user_id":"usr_nobody000000000000001"}',
   '1990-01-01 10:00+00'),
  ('c1d00000-0000-4000-8000-000000000002', null, '1990-02-01 09:00+00', '[]', '{}',
   '1990-02-01 10:00+00'),
  -- linked, just as old: never touched
  ('c1d00000-0000-4000-8000-000000000003', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', '1990-01-01 09:00+00',
   '[]', '{}', '1990-01-01 10:00+00'),
  -- unlinked but recent: kept
  ('c1d00000-0000-4000-8000-000000000004', null, '1999-01-01 09:00+00', '[]', '{}',
   '1999-01-01 10:00+00');
update identity.conversations set source_id = 'agents-conv-1'
  where id = 'c1d00000-0000-4000-8000-000000000001';

-- ---------------------------------------------------------------------------------------------
-- signatures and defaults (the seed's 90 and 7 days)
-- ---------------------------------------------------------------------------------------------
select is(pg_catalog.pg_get_function_arguments('identity.archive_old_events(integer, integer, boolean)'::regprocedure),
  'older_than_days integer DEFAULT 90, batch_size integer DEFAULT 5000, dry_run boolean DEFAULT false',
  'archive_old_events defaults: 90 days, batches of 5000, not a dry run');
select is(pg_catalog.pg_get_function_arguments('identity.delete_unlinked_conversations(integer, integer, boolean)'::regprocedure),
  'older_than_days integer DEFAULT 7, batch_size integer DEFAULT 1000, dry_run boolean DEFAULT false',
  'delete_unlinked_conversations defaults: 7 days, batches of 1000, not a dry run');

-- ---------------------------------------------------------------------------------------------
-- archive_old_events
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service();

create temporary table r on commit drop as
  select identity.archive_old_events((select days from cutoff), 10, true) as v;
select is((select (v ->> 'eligible')::int from r), 3, 'dry run: 3 events are older than the cutoff');
select is((select (v ->> 'moved')::int from r), 0, 'dry run: nothing moved');
select is((select count(*)::int from identity.events where event_type like 'old.%'), 3,
  'dry run: the events are still in identity.events');

truncate r;
insert into r select identity.archive_old_events((select days from cutoff), 2);
select is((select (v ->> 'moved')::int from r), 2, 'a batch of 2 moves 2 events');
select is((select (v ->> 'more')::boolean from r), true, '... and says more remain');
select results_eq(
  $$ select id::text from identity.events_archive
     where id::text like '01d00000%' order by id $$,
  array['01d00000-0000-4000-8000-000000000001', '01d00000-0000-4000-8000-000000000002'],
  'the oldest events move first');

truncate r;
insert into r select identity.archive_old_events((select days from cutoff), 2);
select is((select (v ->> 'moved')::int from r), 1, 'the next batch moves the last one');
select is((select (v ->> 'more')::boolean from r), false, '... and says none remain');
select is((select count(*)::int from identity.events where event_type like 'old.%'), 0,
  'no event older than the cutoff is left in identity.events');
select results_eq(
  $$ select id::text, user_id, event_type, event_data, created_at, received_at
     from identity.events_archive where id::text like '01d00000%' order by id $$,
  $$ values
     ('01d00000-0000-4000-8000-000000000001', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'old.a',
      '{"n":1}'::jsonb, '1990-01-01 10:00+00'::timestamptz, '1990-01-01 10:00:01+00'::timestamptz),
     ('01d00000-0000-4000-8000-000000000002', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'old.b',
      '{"n":2}'::jsonb, '1990-02-01 10:00+00'::timestamptz, '1990-02-01 10:00:01+00'::timestamptz),
     ('01d00000-0000-4000-8000-000000000003', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'old.c',
      '{"n":3}'::jsonb, '1990-03-01 10:00+00'::timestamptz, '1990-03-01 10:00:01+00'::timestamptz) $$,
  'moved events keep their id, user, type, data and both timestamps');
select is((select count(*)::int from identity.events
           where id = '0e000000-0000-4000-8000-000000000001'),
  1, 'a recent event stays in identity.events');
select is((select count(*)::int from identity.events_archive
           where id = '0e000000-0000-4000-8000-000000000001'),
  0, '... and is not archived');

-- An event delivered again after its move (same client id) is moved once more without a
-- duplicate in the archive.
insert into identity.events (id, user_id, event_type, event_data, created_at)
values ('01d00000-0000-4000-8000-000000000001', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'old.a', '{"n":1}',
        '1990-01-01 10:00+00');
truncate r;
insert into r select identity.archive_old_events((select days from cutoff), 10);
select is((select count(*)::int from identity.events_archive
           where id = '01d00000-0000-4000-8000-000000000001'),
  1, 'a re-delivered event is archived once');
select is((select count(*)::int from identity.events
           where id = '01d00000-0000-4000-8000-000000000001'),
  0, '... and leaves identity.events');

select throws_ok($$ select identity.archive_old_events(0) $$, '22023',
  'older_than_days must be a whole number of days, at least 1 (got 0)',
  'older_than_days below 1 is refused by name');
select throws_ok($$ select identity.archive_old_events(90, 0) $$, '22023',
  'batch_size must be between 1 and 50000 (got 0)', 'batch_size below 1 is refused by name');
select throws_ok($$ select identity.archive_old_events(90, 50001) $$, '22023',
  'batch_size must be between 1 and 50000 (got 50001)', 'batch_size above 50000 is refused');
select throws_ok($$ select identity.archive_old_events(null) $$, '22023',
  'older_than_days must be a whole number of days, at least 1 (got null)', 'null is refused');

-- ---------------------------------------------------------------------------------------------
-- delete_unlinked_conversations
-- ---------------------------------------------------------------------------------------------
truncate r;
insert into r select identity.delete_unlinked_conversations((select days from cutoff), 10, true);
select is((select (v ->> 'eligible')::int from r), 2, 'dry run: 2 unlinked conversations are past the cutoff');
select is((select (v ->> 'deleted')::int from r), 0, 'dry run: nothing deleted');
select is((select jsonb_array_length(v -> 'conversations') from r), 2, 'dry run: both are listed');
select is((select count(*)::int from identity.conversations where id::text like 'c1d00000%'), 4,
  'dry run: every conversation is still there');

truncate r;
insert into r select identity.delete_unlinked_conversations((select days from cutoff), 1);
select is((select (v ->> 'deleted')::int from r), 1, 'a batch of 1 deletes 1');
select is((select (v ->> 'more')::boolean from r), true, '... and says more remain');
select is((select v -> 'conversations' -> 0 ->> 'id' from r), 'c1d00000-0000-4000-8000-000000000001',
  'the oldest goes first');
select is((select v -> 'conversations' -> 0 ->> 'source_id' from r), 'agents-conv-1',
  'the report gives the agents service''s id');
select is((select v -> 'conversations' -> 0 ->> 'pending_user_id' from r), 'usr_nobody000000000000001',
  '... the user it was waiting for');
select is((select (v -> 'conversations' -> 0 ->> 'message_count')::int from r), 2,
  '... and how many messages went with it');

truncate r;
insert into r select identity.delete_unlinked_conversations((select days from cutoff), 10);
select is((select (v ->> 'deleted')::int from r), 1, 'the next batch deletes the other one');
select is((select (v ->> 'more')::boolean from r), false, '... and says none remain');
select results_eq(
  $$ select id::text from identity.conversations where id::text like 'c1d00000%' order by id $$,
  array['c1d00000-0000-4000-8000-000000000003', 'c1d00000-0000-4000-8000-000000000004'],
  'the linked conversation and the recent unlinked one are untouched');
select throws_ok($$ select identity.delete_unlinked_conversations(0) $$, '22023',
  'older_than_days must be a whole number of days, at least 1 (got 0)',
  'older_than_days below 1 is refused by name');

-- ---------------------------------------------------------------------------------------------
-- analyze_tables: planner statistics refreshed (reltuples is what ANALYZE writes)
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
insert into identity.users (id, shop_domain)
select 'usr_analyze' || lpad(g::text, 16, '0'), 'analyze-' || g || '.myshopify.com'
from generate_series(1, 40) as g;
select tests.authenticate_as_service();
truncate r;
insert into r select identity.analyze_tables(true);
select is((select v ->> 'analyzed_at' from r), null, 'a dry run analyzes nothing');
truncate r;
insert into r select identity.analyze_tables();
select is(
  (select c.reltuples::bigint from pg_catalog.pg_class as c where c.oid = 'identity.users'::regclass),
  (select count(*) from identity.users),
  'after analyze_tables (as the service role) the planner knows how many users there are');
select is((select v -> 'tables' from r), '["conversations", "events", "events_archive", "users"]'::jsonb,
  'it names the tables it analyzed');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- who may call them
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select throws_ok($$ select identity.archive_old_events() $$, '42501', null,
  'a user-scoped token cannot move events');
select throws_ok($$ select identity.delete_unlinked_conversations() $$, '42501', null,
  'a user-scoped token cannot delete conversations');
select throws_ok($$ select identity.analyze_tables() $$, '42501', null,
  'a user-scoped token cannot run ANALYZE');
select throws_ok($$ select identity_private.analyze_identity_tables() $$, '42501', null,
  'nor call the owner-rights function directly');
select tests.clear_authentication();
select is_empty(
  $$ select p.proname from pg_catalog.pg_proc as p
     where p.pronamespace = 'identity'::regnamespace
       and p.proname in ('archive_old_events', 'delete_unlinked_conversations', 'analyze_tables')
       and (has_function_privilege('anon', p.oid, 'execute')
            or has_function_privilege('authenticated', p.oid, 'execute')
            or not has_function_privilege('service_role', p.oid, 'execute')) $$,
  'only the service role may execute the maintenance functions');

-- ---------------------------------------------------------------------------------------------
-- pg_cron: the schedule exists after `supabase db push` (the local stack preloads pg_cron)
-- ---------------------------------------------------------------------------------------------
select is(
  (select string_agg(format('%s %s %s', jobname, schedule, active), ' | ' order by jobname)
   from cron.job where jobname like 'identity-%'),
  'identity-analyze 30 3 1 * * t | identity-archive-old-events 10 3 * * * t | '
    || 'identity-delete-unlinked-conversations 20 3 * * 0 t',
  'pg_cron holds the three maintenance jobs, active, with their schedules');
select is_empty(
  $$ select jobname from cron.job
     where jobname like 'identity-%'
       and (database <> current_database()
            or command not like '%identity.' || case jobname
                 when 'identity-analyze' then 'analyze_tables()'
                 when 'identity-archive-old-events' then 'archive_old_events()'
                 else 'delete_unlinked_conversations()' end || '%') $$,
  'each job runs its function in this database');

select * from finish();
rollback;
