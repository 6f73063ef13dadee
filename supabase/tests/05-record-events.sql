-- =============================================================================================
-- identity.record_events(events jsonb) → setof (id, status): idempotent batch insert keyed by
-- the client-generated event id. status is inserted | duplicate | unknown_user.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(17);

select tests.create_fixture_users();
select tests.authenticate_as_service();

create temporary table batch on commit drop as
  select '[
    {"id":"de000000-0000-4000-8000-000000000001","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "event_type":"chat.started","event_data":{"workflow":"support"},
     "created_at":"2026-01-10T08:00:00Z"},
    {"id":"de000000-0000-4000-8000-000000000002","user_id":"usr_bbbbbbbbbbbbbbbbbbbbbbbb",
     "event_type":"login"},
    {"id":"de000000-0000-4000-8000-000000000003","user_id":"usr_ffffffffffffffffffffffff",
     "event_type":"login"}
  ]'::jsonb as events;

select set_eq(
  $$ select id, status from identity.record_events((select events from batch)) $$,
  $$ values ('de000000-0000-4000-8000-000000000001'::uuid, 'inserted'),
            ('de000000-0000-4000-8000-000000000002'::uuid, 'inserted'),
            ('de000000-0000-4000-8000-000000000003'::uuid, 'unknown_user') $$,
  'first delivery: known users inserted, the unknown user reported');
select is(
  (select row(user_id, event_type, event_data, created_at)::text from identity.events
   where id = 'de000000-0000-4000-8000-000000000001'),
  row('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'chat.started', '{"workflow": "support"}'::jsonb,
      '2026-01-10 08:00+00'::timestamptz)::text,
  'the event is stored with its user, type, data and client time');
select is(
  (select row(event_data, created_at)::text from identity.events
   where id = 'de000000-0000-4000-8000-000000000002'),
  row('{}'::jsonb, now())::text,
  'missing event_data defaults to {} and missing created_at to now()');
select is_empty(
  $$ select 1 from identity.events where id = 'de000000-0000-4000-8000-000000000003' $$,
  'nothing stored for the unknown user');

-- Replay of the same batch (a retried delivery).
select set_eq(
  $$ select id, status from identity.record_events((select events from batch)) $$,
  $$ values ('de000000-0000-4000-8000-000000000001'::uuid, 'duplicate'),
            ('de000000-0000-4000-8000-000000000002'::uuid, 'duplicate'),
            ('de000000-0000-4000-8000-000000000003'::uuid, 'unknown_user') $$,
  'replay: already stored events reported as duplicate');
select is(
  (select count(*)::int from identity.events where id = 'de000000-0000-4000-8000-000000000001'),
  1, 'exactly one row after the replay');
select is(
  (select count(*)::int from identity.events
   where id in ('de000000-0000-4000-8000-000000000001', 'de000000-0000-4000-8000-000000000002',
                'de000000-0000-4000-8000-000000000003')),
  2, 'exactly the two accepted events exist');

-- A replay carrying different data does not overwrite the stored event.
select results_eq(
  $$ select status from identity.record_events(
       '[{"id":"de000000-0000-4000-8000-000000000001","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa",
          "event_type":"chat.started","event_data":{"workflow":"changed"}}]') $$,
  array['duplicate'], 'a replay with different data is still a duplicate');
select is(
  (select event_data ->> 'workflow' from identity.events
   where id = 'de000000-0000-4000-8000-000000000001'),
  'support', '... and the stored event is unchanged');

-- Mixed batch: new + duplicate + unknown in one call, results in one row per input.
select set_eq(
  $$ select id, status from identity.record_events(
       '[{"id":"de000000-0000-4000-8000-000000000004","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"chat.ended"},
         {"id":"de000000-0000-4000-8000-000000000002","user_id":"usr_bbbbbbbbbbbbbbbbbbbbbbbb","event_type":"login"},
         {"id":"de000000-0000-4000-8000-000000000005","user_id":"usr_gggggggggggggggggggggggg","event_type":"login"}]') $$,
  $$ values ('de000000-0000-4000-8000-000000000004'::uuid, 'inserted'),
            ('de000000-0000-4000-8000-000000000002'::uuid, 'duplicate'),
            ('de000000-0000-4000-8000-000000000005'::uuid, 'unknown_user') $$,
  'a mixed batch reports each event');
select is_empty($$ select * from identity.record_events('[]') $$,
  'an empty batch returns nothing');

-- Bad input fails the whole batch (the client fixes its payload), nothing half-written.
select throws_ok(
  $$ select * from identity.record_events(
       '[{"id":"de000000-0000-4000-8000-000000000006","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"ok"},
         {"id":"de000000-0000-4000-8000-000000000007","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"Bad Type"}]') $$,
  '23514', null, 'an invalid event_type raises 23514');
select is_empty(
  $$ select 1 from identity.events where id = 'de000000-0000-4000-8000-000000000006' $$,
  '... and no event of that batch is stored');
select throws_ok(
  $$ select * from identity.record_events(
       '[{"user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"login"}]') $$,
  '23502', null, 'an event without an id raises 23502 (ids come from the client)');
select throws_ok(
  $$ select * from identity.record_events('{"id":"x"}') $$,
  '22023', null, 'a non-array payload raises 22023');
select tests.clear_authentication();

-- Only the backend may call it.
select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select throws_ok(
  $$ select * from identity.record_events(
       '[{"id":"de000000-0000-4000-8000-000000000008","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"login"}]') $$,
  '42501', null, 'a user-scoped caller cannot record events');
select tests.clear_authentication();
select tests.authenticate_as_anon();
select throws_ok($$ select * from identity.record_events('[]') $$,
  '42501', null, 'anon cannot record events');
select tests.clear_authentication();

select * from finish();
rollback;
