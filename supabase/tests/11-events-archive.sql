-- =============================================================================================
-- identity.events_archive: the same shape and access model as identity.events (RLS, own rows
-- for a user-scoped token, nothing for anon, no UPDATE for anyone), and the private schema
-- that holds the one owner-rights function (ANALYZE).
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(27);

select columns_are('identity', 'events_archive',
  array['id', 'user_id', 'event_type', 'event_data', 'created_at', 'received_at', 'archived_at'],
  'events_archive has the columns of events plus archived_at');
select col_is_pk('identity', 'events_archive', 'id', 'events_archive.id is the primary key');
select fk_ok('identity', 'events_archive', 'user_id', 'identity', 'users', 'id',
  'events_archive.user_id references users');
select indexes_are('identity', 'events_archive',
  array['events_archive_pkey', 'events_archive_user_id_created_at_idx'],
  'events_archive has exactly the expected indexes');
select is(
  (select c.relrowsecurity from pg_catalog.pg_class as c
   where c.oid = 'identity.events_archive'::regclass),
  true, 'RLS is enabled on events_archive');
select policies_are('identity', 'events_archive',
  array['Users can read their own archived events', 'Counts come from visible rows, never from planner estimates'],
  'events_archive has its read policy and the planner-count guard');
select policy_cmd_is('identity', 'events_archive', 'Users can read their own archived events',
  'select', '... for SELECT');
select policy_roles_are('identity', 'events_archive', 'Users can read their own archived events',
  array['authenticated'], '... to authenticated only');
select table_privs_are('identity', 'events_archive', 'anon', array[]::text[],
  'anon has no privilege on events_archive');
select table_privs_are('identity', 'events_archive', 'authenticated', array['SELECT'],
  'authenticated can only SELECT events_archive');
select table_privs_are('identity', 'events_archive', 'service_role',
  array['SELECT', 'INSERT', 'DELETE'], 'service_role has SELECT, INSERT, DELETE (no UPDATE)');
select table_privs_are('identity', 'events_archive', 'authenticator', array[]::text[],
  'authenticator itself has no privilege on events_archive');
select ok(obj_description('identity.events_archive'::regclass, 'pg_class') is not null,
  'events_archive has a comment');
select ok(obj_description('identity.events_created_at_idx'::regclass, 'pg_class') is not null,
  'events_created_at_idx has a comment');

-- Rows: two users' archived events; each user reads only its own.
select tests.create_fixture_users();
insert into identity.events_archive (id, user_id, event_type, event_data, created_at, received_at)
values ('aa000000-0000-4000-8000-000000000001', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'login', '{}',
        '2025-01-01 09:00+00', '2025-01-01 09:00+00'),
       ('bb000000-0000-4000-8000-000000000001', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'login',
        '{"secret":"B"}', '2025-01-01 09:00+00', '2025-01-01 09:00+00');

select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select results_eq(
  $$ select id::text from identity.events_archive order by id $$,
  array['aa000000-0000-4000-8000-000000000001'],
  'a user-scoped token reads only its own archived events');
select throws_ok(
  $$ insert into identity.events_archive (id, user_id, event_type, created_at, received_at)
     values (gen_random_uuid(), 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'x', now(), now()) $$,
  '42501', null, 'a user-scoped token cannot insert archived events');
select throws_ok($$ delete from identity.events_archive $$, '42501', null,
  'a user-scoped token cannot delete archived events');
select tests.clear_authentication();

select tests.authenticate_as_anon();
select throws_ok($$ select 1 from identity.events_archive $$, '42501', null,
  'anon cannot read events_archive');
select tests.clear_authentication();

select tests.authenticate_as_service();
select is((select count(*)::int from identity.events_archive
           where id in ('aa000000-0000-4000-8000-000000000001',
                        'bb000000-0000-4000-8000-000000000001')),
  2, 'the service role reads every archived event');
select throws_ok(
  $$ update identity.events_archive set event_type = 'x'
     where id = 'aa000000-0000-4000-8000-000000000001' $$,
  '42501', null, 'nobody updates an archived event, not even the service role');
select tests.clear_authentication();

delete from identity.users where id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb';
select is((select count(*)::int from identity.events_archive
           where id = 'bb000000-0000-4000-8000-000000000001'),
  0, 'deleting a user deletes its archived events (on delete cascade)');

-- ---------------------------------------------------------------------------------------------
-- identity_private: not exposed, owner-rights function for ANALYZE only
-- ---------------------------------------------------------------------------------------------
select schema_privs_are('identity_private', 'anon', array[]::text[],
  'anon has no privilege on identity_private');
select schema_privs_are('identity_private', 'authenticated', array[]::text[],
  'authenticated has no privilege on identity_private');
select schema_privs_are('identity_private', 'service_role', array['USAGE'],
  'service_role has USAGE on identity_private');
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_catalog.pg_proc as p
   where p.pronamespace = 'identity_private'::regnamespace and p.prosecdef),
  array['analyze_identity_tables'],
  'the only SECURITY DEFINER function is identity_private.analyze_identity_tables');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     where p.pronamespace = 'identity_private'::regnamespace
       and (not coalesce(p.proconfig @> array['search_path=""'], false)
            or has_function_privilege('anon', p.oid, 'execute')
            or has_function_privilege('authenticated', p.oid, 'execute')) $$,
  'identity_private functions pin search_path and are not executable by anon or authenticated');
select ok(
  not ('identity_private' = any (string_to_array(current_setting('pgrst.db_schemas', true), ','))),
  'identity_private is not an exposed API schema');

select * from finish();
rollback;
