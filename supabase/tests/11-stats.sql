-- =============================================================================================
-- identity.stats: exact figures on a seeded dataset, and who may call it.
--
-- The dataset lives in January 2001 and as_of is 2001-01-31 12:30 UTC: rows that other tests
-- (or a developer) left in the database are newer than as_of and count nowhere, so every figure
-- below is exact. Storage figures are compared with the catalog functions they come from.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(37);

insert into identity.users (id, shop_domain, created_at, last_seen) values
  -- new on the last day, never back
  ('usr_stats000000000000000001', 'stats-1.myshopify.com', '2001-01-31 09:00+00', '2001-01-31 09:00+00'),
  -- back 25 hours later: returning
  ('usr_stats000000000000000002', 'stats-2.myshopify.com', '2001-01-30 10:00+00', '2001-01-31 11:00+00'),
  -- back 12 hours later: not yet returning
  ('usr_stats000000000000000003', 'stats-3.myshopify.com', '2001-01-20 08:00+00', '2001-01-20 20:00+00'),
  -- first day of the 30-day window, returning
  ('usr_stats000000000000000004', 'stats-4.myshopify.com', '2001-01-02 00:00+00', '2001-01-25 00:00+00'),
  -- before the window, returning
  ('usr_stats000000000000000005', 'stats-5.myshopify.com', '2000-12-15 00:00+00', '2001-01-31 00:00+00'),
  -- after as_of: counts nowhere
  ('usr_stats000000000000000006', 'stats-6.myshopify.com', '2001-02-05 00:00+00', '2001-02-05 00:00+00');

insert into identity.conversations
  (id, user_id, started_at, ended_at, metadata, created_at, archived_at) values
  -- latency 600 s (from its end, not its expiry), hour 12; archived 3600 s before expiry
  ('5a000000-0000-4000-8000-000000000001', 'usr_stats000000000000000001', '2001-01-31 11:00+00',
   '2001-01-31 11:50+00', '{"archive": {"expires_at": "2001-01-31T13:00:00Z"}}',
   '2001-01-31 12:00+00', '2001-01-31 12:00+00'),
  -- latency 900 s, hour 11
  ('5a000000-0000-4000-8000-000000000002', 'usr_stats000000000000000001', '2001-01-31 10:00+00',
   '2001-01-31 11:00+00', '{}', '2001-01-31 11:15+00', '2001-01-31 11:15+00'),
  -- no end, archived after the expiry the archiver recorded: latency 600 s, hour 12;
  -- archived -600 s before expiry
  ('5a000000-0000-4000-8000-000000000003', 'usr_stats000000000000000002', '2001-01-31 10:00+00',
   null, '{"archive": {"expires_at": "2001-01-31T12:10:00Z"}}', '2001-01-31 12:20+00',
   '2001-01-31 12:20+00'),
  -- no end, no expiry: archived in the window (hour 13 of the day before), no latency sample
  ('5a000000-0000-4000-8000-000000000004', 'usr_stats000000000000000002', '2001-01-30 12:00+00',
   null, '{}', '2001-01-30 13:00+00', '2001-01-30 13:00+00'),
  -- archived before the window
  ('5a000000-0000-4000-8000-000000000005', 'usr_stats000000000000000004', '2001-01-29 09:00+00',
   '2001-01-29 10:00+00', '{}', '2001-01-29 10:05+00', '2001-01-29 10:05+00'),
  -- unlinked, latency 3600 s, hour 10
  ('5a000000-0000-4000-8000-000000000006', null, '2001-01-31 08:00+00',
   '2001-01-31 09:00+00', '{}', '2001-01-31 10:00+00', '2001-01-31 10:00+00'),
  -- unlinked, after as_of: counts nowhere
  ('5a000000-0000-4000-8000-000000000007', null, '2001-02-10 08:00+00',
   null, '{}', '2001-02-10 09:00+00', '2001-02-10 09:00+00'),
  -- ended after it was archived (clock skew): latency 0, hour 12
  ('5a000000-0000-4000-8000-000000000008', 'usr_stats000000000000000002', '2001-01-31 12:00+00',
   '2001-01-31 12:29:30+00', '{}', '2001-01-31 12:29+00', '2001-01-31 12:29+00'),
  -- a malformed expiry is no sample (and no error), hour 8
  ('5a000000-0000-4000-8000-000000000009', 'usr_stats000000000000000003', '2001-01-31 07:00+00',
   null, '{"archive": {"expires_at": "not a time"}}', '2001-01-31 08:00+00',
   '2001-01-31 08:00+00'),
  -- unlinked, no end, archived 1800.5 s before the expiry recorded as the archiver writes it
  -- (Python's isoformat, milliseconds): no latency sample (it waited for nothing), hour 11
  ('5a000000-0000-4000-8000-00000000000a', null, '2001-01-31 10:00+00',
   null, '{"archive": {"expires_at": "2001-01-31T12:00:00.500+00:00"}}', '2001-01-31 11:30+00',
   '2001-01-31 11:30+00');

select tests.authenticate_as_service();
create temporary table s on commit drop as
  select identity.stats('2001-01-31 12:30+00') as v;
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- archival
-- ---------------------------------------------------------------------------------------------
select is((select (v ->> 'as_of')::timestamptz from s), '2001-01-31 12:30+00'::timestamptz,
  'as_of is echoed');
select is((select jsonb_array_length(v -> 'archival' -> 'archived_per_hour') from s), 24,
  'archived_per_hour has 24 buckets');
select is((select v -> 'archival' -> 'archived_per_hour' -> 0 ->> 'hour' from s),
  '2001-01-30T13:00:00+00:00', 'the first bucket is the hour 23 hours before as_of''s hour');
select is((select v -> 'archival' -> 'archived_per_hour' -> 23 ->> 'hour' from s),
  '2001-01-31T12:00:00+00:00', 'the last bucket is as_of''s hour');
select is(
  (select array_agg((b ->> 'count')::int order by ord)
   from s, jsonb_array_elements(v -> 'archival' -> 'archived_per_hour') with ordinality as x (b, ord)),
  array[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3],
  'archived per hour: 13h the day before, then 08h, 10h, two in 11h and three in 12h');
select is((select (v -> 'archival' ->> 'archived_24h')::int from s), 8,
  'archived_24h: 8 conversations archived in the 24 hours up to as_of');
select is((select (v -> 'archival' ->> 'latency_samples')::int from s), 5,
  'latency samples: the 5 conversations with an end, or archived after their valid expiry');
select is((select (v -> 'archival' ->> 'latency_avg_seconds')::float8 from s), 1140::float8,
  'average latency: (600 + 900 + 600 + 3600 + 0) / 5 = 1140 s');
select is((select (v -> 'archival' ->> 'latency_p95_seconds')::float8 from s), 3060::float8,
  'p95 latency: 900 + 0.8 * (3600 - 900) = 3060 s (continuous percentile)');
select is((select (v -> 'archival' ->> 'unlinked_conversations')::int from s), 2,
  'unlinked: two conversations without a user existed at as_of');
select is((select (v -> 'archival' ->> 'expiry_samples')::int from s), 3,
  'expiry samples: the 3 conversations with a readable expiry, ended or not');
select is((select (v -> 'archival' ->> 'before_expiry_avg_seconds')::numeric from s), 1600.167,
  'archived before expiry, average: (3600 + 1800.5 - 600) / 3 = 1600.167 s');
select is((select (v -> 'archival' ->> 'before_expiry_min_seconds')::numeric from s), -600.000,
  'archived before expiry, closest call: -600 s (archived after the expiry it recorded)');

-- ---------------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------------
select is((select (v -> 'users' ->> 'total')::int from s), 5, 'users: 5 existed at as_of');
select is((select jsonb_array_length(v -> 'users' -> 'new_per_day') from s), 30,
  'new_per_day has 30 buckets');
select is((select v -> 'users' -> 'new_per_day' -> 0 ->> 'day' from s), '2001-01-02',
  'the first day is 29 days before as_of''s day');
select is((select v -> 'users' -> 'new_per_day' -> 29 ->> 'day' from s), '2001-01-31',
  'the last day is as_of''s day');
select is(
  (select array_agg(b ->> 'day' order by ord)
   from s, jsonb_array_elements(v -> 'users' -> 'new_per_day') with ordinality as x (b, ord)
   where (b ->> 'count')::int > 0),
  array['2001-01-02', '2001-01-20', '2001-01-30', '2001-01-31'],
  'new users on Jan 2, 20, 30 and 31');
select is(
  (select sum((b ->> 'count')::int)::int
   from s, jsonb_array_elements(v -> 'users' -> 'new_per_day') as b),
  4, '... one each');
select is((select (v -> 'users' ->> 'new_30d')::int from s), 4, 'new_30d: 4');
select is((select (v -> 'users' ->> 'returning')::int from s), 3,
  'returning: the 3 users seen again at least a day after their creation');
select is((select (v -> 'users' ->> 'returning_rate')::numeric from s), 0.6,
  'returning rate: 3 / 5');
select is((select (v -> 'users' ->> 'conversations_per_user_median')::float8 from s), 1::float8,
  'conversations per user (0, 1, 1, 2, 3): median 1');
select is((select (v -> 'users' ->> 'conversations_per_user_p95')::float8 from s), 2.8::float8,
  '... p95 2 + 0.8 * (3 - 2) = 2.8');
select is((select (v -> 'users' ->> 'conversations_per_user_mean')::numeric from s), 1.4,
  '... mean 7 / 5');

-- ---------------------------------------------------------------------------------------------
-- storage
-- ---------------------------------------------------------------------------------------------
select set_eq(
  $$ select t ->> 'name' from s, jsonb_array_elements(v -> 'storage' -> 'tables') as t $$,
  $$ select c.relname::text from pg_catalog.pg_class as c
     where c.relnamespace = 'identity'::regnamespace and c.relkind in ('r', 'p') $$,
  'storage lists every table of the schema');
select is_empty(
  $$ select t ->> 'name' from s, jsonb_array_elements(v -> 'storage' -> 'tables') as t
     where (t ->> 'total_bytes')::bigint
             <> pg_catalog.pg_total_relation_size(('identity.' || (t ->> 'name'))::regclass)
        or (t ->> 'table_bytes')::bigint
             <> pg_catalog.pg_table_size(('identity.' || (t ->> 'name'))::regclass)
        or (t ->> 'index_bytes')::bigint
             <> pg_catalog.pg_indexes_size(('identity.' || (t ->> 'name'))::regclass) $$,
  'table sizes are the catalog''s figures');
select set_eq(
  $$ select i ->> 'name' from s, jsonb_array_elements(v -> 'storage' -> 'indexes') as i $$,
  $$ select i.relname::text from pg_catalog.pg_index as x
     join pg_catalog.pg_class as i on i.oid = x.indexrelid
     join pg_catalog.pg_class as t on t.oid = x.indrelid
     where t.relnamespace = 'identity'::regnamespace $$,
  'storage lists every index of the schema');
select is_empty(
  $$ select i ->> 'name' from s, jsonb_array_elements(v -> 'storage' -> 'indexes') as i
     where (i ->> 'bytes')::bigint
             <> pg_catalog.pg_relation_size(('identity.' || (i ->> 'name'))::regclass) $$,
  'index sizes are the catalog''s figures');
select is(
  (select i ->> 'table' from s, jsonb_array_elements(v -> 'storage' -> 'indexes') as i
   where i ->> 'name' = 'events_created_at_idx'),
  'events', 'each index names its table');
select is(
  (select (i ->> 'unique')::boolean from s, jsonb_array_elements(v -> 'storage' -> 'indexes') as i
   where i ->> 'name' = 'users_shop_domain_key'),
  true, 'unique indexes are marked');

-- ---------------------------------------------------------------------------------------------
-- as_of defaults to now; who may call it
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service();
select is((select (identity.stats() ->> 'as_of')::timestamptz), now(), 'as_of defaults to now()');
select ok((select (identity.stats() -> 'users' ->> 'total')::int >= 6),
  'with as_of = now, the user created after 2001-01-31 counts too');
select tests.clear_authentication();

select tests.authenticate_as('usr_stats000000000000000001');
select throws_ok($$ select identity.stats() $$, '42501', null,
  'a user-scoped token cannot call stats');
select tests.clear_authentication();
select tests.authenticate_as_anon();
select throws_ok($$ select identity.stats() $$, '42501', null, 'anon cannot call stats');
select tests.clear_authentication();

select function_privs_are('identity', 'stats', array['timestamp with time zone'],
  'authenticated', array[]::text[], 'authenticated has no EXECUTE on stats');
select function_privs_are('identity', 'stats', array['timestamp with time zone'],
  'service_role', array['EXECUTE'], 'service_role has EXECUTE on stats');

select * from finish();
rollback;
