-- =============================================================================================
-- The request guards (schema identity_guard): planner estimates refused to roles under RLS,
-- the OpenAPI description of identity refused to all but the service role, and a pre-request
-- function installed only where the project has none (or one that already calls ours).
-- What PostgREST makes of them over HTTP is tested in tests/integration/test_request_guards.py.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(33);

-- ---------------------------------------------------------------------------------------------
-- Shape and privileges.
-- ---------------------------------------------------------------------------------------------
select has_schema('identity_guard', 'schema identity_guard exists');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity_guard'
       and not coalesce(p.proconfig @> array['search_path=""'], false) $$,
  'every identity_guard function pins search_path to ''''');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity_guard' and p.prosecdef $$,
  'no identity_guard function is SECURITY DEFINER');
select is(
  (select current_setting('pgrst.db_schemas', true) like '%identity_guard%'), false,
  'identity_guard is not an exposed schema');
select ok(has_function_privilege('anon', 'identity_guard.check_request(text)', 'execute'),
  'anon can run the pre-request check (PostgREST calls it as the request''s role)');
select ok(has_function_privilege('authenticated', 'identity_guard.forbid_planner_counts()',
  'execute'), 'authenticated can evaluate the planner-count guard');
select function_privs_are('identity_guard', 'install_pre_request', array[]::text[],
  'anon', array[]::text[], 'anon cannot install the pre-request function');
select function_privs_are('identity_guard', 'install_pre_request', array[]::text[],
  'authenticated', array[]::text[], 'authenticated cannot install the pre-request function');
select function_privs_are('identity_guard', 'install_pre_request', array[]::text[],
  'service_role', array[]::text[], 'service_role cannot install the pre-request function');
select volatility_is('identity_guard', 'forbid_planner_counts', array[]::text[], 'immutable',
  'the planner-count guard is immutable, so the planner evaluates it while planning');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('r', 'p')
       and exists (select from pg_catalog.pg_roles as r
                   where not r.rolbypassrls and not r.rolsuper
                     and has_table_privilege(r.oid, c.oid, 'select'))
       and not exists (select from pg_catalog.pg_policies as p
                       where p.schemaname = 'identity' and p.tablename = c.relname
                         and p.policyname = 'Counts come from visible rows, never from planner estimates') $$,
  'every identity table a role under RLS may read carries the planner-count guard');

-- ---------------------------------------------------------------------------------------------
-- Planner estimates. The guard looks at the statement the client sent (current_query()); here
-- that is always pgTAP's `select throws_ok(...)`, never an EXPLAIN, so the refusal itself is
-- tested where PostgREST sends the EXPLAIN: tests/integration/test_request_guards.py. Here:
-- ordinary queries are unaffected, and the service role's plans never meet the guard.
-- ---------------------------------------------------------------------------------------------
select tests.create_fixture_users();

select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select results_eq(
  $$ select count(*)::int from identity.conversations $$, array[3],
  'a user still counts its own conversations exactly');
select results_eq(
  $$ select count(*)::int from identity.conversations
     where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$, array[0],
  '... and none of another user''s');
select results_eq(
  $$ select count(*)::int from identity.events where event_type = 'login' $$, array[1],
  'events and users stay readable: the guard folds to true outside an EXPLAIN');

select tests.authenticate_as_service();
select results_eq(
  $$ select count(*)::int from identity.conversations
     where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$, array[1],
  'the service role (bypasses RLS, so never evaluates the guard) counts every row');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- The pre-request check: only the root of schema identity, only roles under RLS.
-- ---------------------------------------------------------------------------------------------
set local request.path = '/';

select tests.authenticate_as_anon();
select throws_ok(
  $$ select identity_guard.check_request('"identity", "public", "extensions"') $$,
  '42501', 'the API description of schema identity is available to the service role only',
  'anon gets no description of identity');
select lives_ok(
  $$ select identity_guard.check_request('"public", "extensions"') $$,
  'anon still gets the description of another schema');
set local request.path = '/users';
select lives_ok(
  $$ select identity_guard.check_request('"identity", "public", "extensions"') $$,
  'requests for tables and functions pass the check (grants and RLS decide)');
set local request.path = '/';
set local search_path = "identity", "public", "extensions";
select throws_ok(
  $$ select identity_guard.check_request() $$,
  '42501', 'the API description of schema identity is available to the service role only',
  'called without argument, the check reads the search_path PostgREST set for the request');
set local search_path = extensions, public;

select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select throws_ok(
  $$ select identity_guard.check_request('"identity", "public", "extensions"') $$,
  '42501', 'the API description of schema identity is available to the service role only',
  'a user-scoped token gets no description of identity either');

select tests.authenticate_as_service();
select lives_ok(
  $$ select identity_guard.check_request('"identity", "public", "extensions"') $$,
  'the service role gets the description of identity');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Installing the pre-request function never replaces someone else's.
-- ---------------------------------------------------------------------------------------------
create function tests.pre_request_setting() returns text
  language sql
as $$
  select string_agg(setdatabase::text || ':' || setting, ' ' order by setdatabase)
  from pg_catalog.pg_db_role_setting as s, unnest(s.setconfig) as setting
  where s.setrole = 'authenticator'::regrole and setting like 'pgrst.db_pre_request=%'
$$;

select is(tests.pre_request_setting(), '0:pgrst.db_pre_request=identity_guard.check_request',
  'the migrations registered identity_guard.check_request, role-wide');
select is(identity_guard.install_pre_request(), 'unchanged: already registered',
  'installing again changes nothing');

alter role authenticator reset pgrst.db_pre_request;
select is(identity_guard.install_pre_request(), 'registered identity_guard.check_request',
  'with no pre-request function, it registers its own');
select is(tests.pre_request_setting(), '0:pgrst.db_pre_request=identity_guard.check_request',
  '... role-wide, as Supabase documents');

create function public.projects_own_check() returns void
  language plpgsql
as $$ begin perform 1; end; $$;
alter role authenticator set pgrst.db_pre_request = 'public.projects_own_check';
select throws_ok(
  $$ select identity_guard.install_pre_request() $$,
  '55000',
  'PostgREST already runs the pre-request function public.projects_own_check; '
    'supabase-identity will not replace it',
  'a project''s own pre-request function is never replaced');
select is(tests.pre_request_setting(), '0:pgrst.db_pre_request=public.projects_own_check',
  '... and stays configured');

create or replace function public.projects_own_check(
  request_search_path text default pg_catalog.current_setting('search_path')
) returns void
  language plpgsql
as $$ begin perform identity_guard.check_request(request_search_path); end; $$;
select is(identity_guard.install_pre_request(),
  'unchanged: public.projects_own_check already calls identity_guard.check_request',
  'once the project''s function calls ours, installing accepts it');
select is(tests.pre_request_setting(), '0:pgrst.db_pre_request=public.projects_own_check',
  '... without touching the setting');

alter role authenticator reset pgrst.db_pre_request;
do $$ begin
  execute format('alter role authenticator in database %I set pgrst.db_pre_request = %L',
                 current_database(), '');
end $$;
select is(identity_guard.install_pre_request(), 'registered identity_guard.check_request',
  'an empty per-database setting counts as none');
select matches(tests.pre_request_setting(),
  '^[1-9][0-9]*:pgrst\.db_pre_request=identity_guard\.check_request$',
  '... and is the entry replaced, since PostgREST reads it before the role-wide one');
do $$ begin
  execute format('alter role authenticator in database %I reset pgrst.db_pre_request',
                 current_database());
end $$;

create function public.projects_pre_config() returns void
  language plpgsql
as $$ begin perform set_config('pgrst.db_pre_request', 'public.projects_own_check', true); end; $$;
alter role authenticator set pgrst.db_pre_config = 'public.projects_pre_config';
select throws_ok(
  $$ select identity_guard.install_pre_request() $$,
  '55000',
  'the db-pre-config function public.projects_pre_config sets a pre-request function; '
    'supabase-identity will not override it',
  'a pre-request function set by a db-pre-config function is not overridden either');
select is(tests.pre_request_setting(), null, '... and nothing was registered');

select * from finish();
rollback;
