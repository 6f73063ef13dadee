-- =============================================================================================
-- Security model, as catalog facts: RLS on every table (including tables added later), the
-- policies, functions with a pinned empty search_path that PUBLIC and anon cannot execute, and
-- the exact privileges of every API role on the schema, its tables and its functions.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(70);

-- ---------------------------------------------------------------------------------------------
-- Row level security: every table, whatever its name, now and in future migrations.
-- ---------------------------------------------------------------------------------------------
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('r', 'p') and not c.relrowsecurity $$,
  'RLS is enabled on every table in schema identity');
select isnt_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('r', 'p') $$,
  '... and that check looked at some tables');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity'
       and c.relowner in (select oid from pg_catalog.pg_roles
                          where rolname in ('anon', 'authenticated', 'service_role',
                                            'authenticator')) $$,
  'no identity relation is owned by an API role (owners bypass RLS)');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('v', 'm')
       and not coalesce(c.reloptions @> array['security_invoker=true'], false) $$,
  'no view in identity runs with its owner''s rights (security_invoker everywhere)');

-- ---------------------------------------------------------------------------------------------
-- Policies: read-only, own rows, authenticated only; the claim read once per statement.
-- ---------------------------------------------------------------------------------------------
select policies_are('identity', 'users',
  array['Users can read their own user row', 'Counts come from visible rows, never from planner estimates'],
  'users has its read policy and the planner-count guard');
select policies_are('identity', 'conversations',
  array['Users can read their own conversations', 'Counts come from visible rows, never from planner estimates'],
  'conversations has its read policy and the planner-count guard');
select policies_are('identity', 'events',
  array['Users can read their own events', 'Counts come from visible rows, never from planner estimates'],
  'events has its read policy and the planner-count guard');
select policy_cmd_is('identity', 'users', 'Users can read their own user row', 'select',
  'the users policy is for SELECT');
select policy_cmd_is('identity', 'conversations', 'Users can read their own conversations',
  'select', 'the conversations policy is for SELECT');
select policy_cmd_is('identity', 'events', 'Users can read their own events', 'select',
  'the events policy is for SELECT');
select policy_roles_are('identity', 'users', 'Users can read their own user row',
  array['authenticated'], 'the users policy applies to authenticated only');
select policy_roles_are('identity', 'conversations', 'Users can read their own conversations',
  array['authenticated'], 'the conversations policy applies to authenticated only');
select policy_roles_are('identity', 'events', 'Users can read their own events',
  array['authenticated'], 'the events policy applies to authenticated only');
select is_empty(
  $$ select tablename || ': ' || policyname from pg_catalog.pg_policies
     where schemaname = 'identity' and permissive = 'PERMISSIVE'
       and roles && array['public', 'anon']::name[] $$,
  'no permissive identity policy applies to anon or PUBLIC');
select is_empty(
  $$ select tablename || ': ' || policyname from pg_catalog.pg_policies
     where schemaname = 'identity' and cmd <> 'SELECT' $$,
  'no identity policy allows a write');
select is_empty(
  $$ select tablename || ': ' || policyname from pg_catalog.pg_policies
     where schemaname = 'identity' and permissive <> 'PERMISSIVE'
       and (policyname <> 'Counts come from visible rows, never from planner estimates' or roles <> array['public']::name[] or cmd <> 'SELECT'
            or qual <> 'identity_guard.forbid_planner_counts()') $$,
  'the only restrictive policies are the planner-count guards, for SELECT, for every role');
select is_empty(
  $$ select tablename || ': ' || policyname from pg_catalog.pg_policies
     where schemaname = 'identity'
       and (qual like '%auth.jwt()%' or qual like '%auth.uid()%')
       and qual not like '%( SELECT auth.%' $$,
  'policies wrap auth.jwt()/auth.uid() in a sub-select (advisor auth_rls_initplan)');

-- ---------------------------------------------------------------------------------------------
-- Functions: pinned search_path, not executable by PUBLIC or anon, run as the caller.
-- ---------------------------------------------------------------------------------------------
select isnt_empty(
  $$ select p.oid from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity' $$,
  'identity has functions to check');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity'
       and not coalesce(p.proconfig @> array['search_path=""'], false) $$,
  'every identity function pins search_path to ''''');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity'
       and exists (select 1
                   from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as a
                   where a.grantee = 0 and a.privilege_type = 'EXECUTE') $$,
  'no identity function is executable by PUBLIC');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity' and has_function_privilege('anon', p.oid, 'execute') $$,
  'no identity function is executable by anon');
select is_empty(
  $$ select p.oid::regprocedure::text from pg_catalog.pg_proc as p
     join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
     where n.nspname = 'identity' and p.prosecdef $$,
  'no identity function is SECURITY DEFINER: grants and RLS apply inside them');

-- Exact EXECUTE privileges per function and role.
select function_privs_are('identity', 'get_or_create_user', array['text', 'text', 'text', 'text', 'text'],
  'anon', array[]::text[], 'anon cannot execute get_or_create_user');
select function_privs_are('identity', 'get_or_create_user', array['text', 'text', 'text', 'text', 'text'],
  'authenticated', array[]::text[], 'authenticated cannot execute get_or_create_user');
select function_privs_are('identity', 'get_or_create_user', array['text', 'text', 'text', 'text', 'text'],
  'service_role', array['EXECUTE'], 'service_role can execute get_or_create_user');
select function_privs_are('identity', 'get_user_profile', array['text'],
  'anon', array[]::text[], 'anon cannot execute get_user_profile');
select function_privs_are('identity', 'get_user_profile', array['text'],
  'authenticated', array['EXECUTE'], 'authenticated can execute get_user_profile');
select function_privs_are('identity', 'get_user_profile', array['text'],
  'service_role', array['EXECUTE'], 'service_role can execute get_user_profile');
select function_privs_are('identity', 'record_events', array['jsonb'],
  'anon', array[]::text[], 'anon cannot execute record_events');
select function_privs_are('identity', 'record_events', array['jsonb'],
  'authenticated', array[]::text[], 'authenticated cannot execute record_events');
select function_privs_are('identity', 'record_events', array['jsonb'],
  'service_role', array['EXECUTE'], 'service_role can execute record_events');
select function_privs_are('identity', 'archive_conversations', array['jsonb'],
  'anon', array[]::text[], 'anon cannot execute archive_conversations');
select function_privs_are('identity', 'archive_conversations', array['jsonb'],
  'authenticated', array[]::text[], 'authenticated cannot execute archive_conversations');
select function_privs_are('identity', 'archive_conversations', array['jsonb'],
  'service_role', array['EXECUTE'], 'service_role can execute archive_conversations');
select function_privs_are('identity', 'link_conversations', array['jsonb'],
  'anon', array[]::text[], 'anon cannot execute link_conversations');
select function_privs_are('identity', 'link_conversations', array['jsonb'],
  'authenticated', array[]::text[], 'authenticated cannot execute link_conversations');
select function_privs_are('identity', 'link_conversations', array['jsonb'],
  'service_role', array['EXECUTE'], 'service_role can execute link_conversations');
select function_privs_are('identity', 'health', array[]::text[],
  'anon', array[]::text[], 'anon cannot execute health');
select function_privs_are('identity', 'health', array[]::text[],
  'authenticated', array[]::text[], 'authenticated cannot execute health');
select function_privs_are('identity', 'health', array[]::text[],
  'service_role', array['EXECUTE'], 'service_role can execute health');
select function_privs_are('identity', 'set_updated_at', array[]::text[],
  'anon', array[]::text[], 'anon cannot execute set_updated_at');
select function_privs_are('identity', 'set_updated_at', array[]::text[],
  'authenticated', array[]::text[], 'authenticated cannot execute set_updated_at');
select function_privs_are('identity', 'set_updated_at', array[]::text[],
  'service_role', array[]::text[], 'service_role cannot execute set_updated_at (trigger only)');

-- ---------------------------------------------------------------------------------------------
-- Schema and table privileges per role.
-- ---------------------------------------------------------------------------------------------
select schema_privs_are('identity', 'anon', array[]::text[], 'anon has no privilege on identity');
select schema_privs_are('identity', 'authenticated', array['USAGE'],
  'authenticated has USAGE (only) on identity');
select schema_privs_are('identity', 'service_role', array['USAGE'],
  'service_role has USAGE (only) on identity');
select schema_privs_are('identity', 'authenticator', array[]::text[],
  'authenticator itself has no privilege on identity');
select is_empty(
  $$ select a.privilege_type from pg_catalog.pg_namespace as n,
       aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) as a
     where n.nspname = 'identity' and a.grantee = 0 $$,
  'PUBLIC has no privilege on schema identity');

select table_privs_are('identity', 'users', 'anon', array[]::text[],
  'anon has no privilege on users');
select table_privs_are('identity', 'conversations', 'anon', array[]::text[],
  'anon has no privilege on conversations');
select table_privs_are('identity', 'events', 'anon', array[]::text[],
  'anon has no privilege on events');
select table_privs_are('identity', 'users', 'authenticated', array['SELECT'],
  'authenticated can only SELECT users');
select table_privs_are('identity', 'conversations', 'authenticated', array['SELECT'],
  'authenticated can only SELECT conversations');
select table_privs_are('identity', 'events', 'authenticated', array['SELECT'],
  'authenticated can only SELECT events');
select table_privs_are('identity', 'users', 'service_role',
  array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role has SELECT, INSERT, UPDATE, DELETE on users (no TRUNCATE/REFERENCES/TRIGGER)');
select table_privs_are('identity', 'conversations', 'service_role',
  array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role has SELECT, INSERT, UPDATE, DELETE on conversations');
select table_privs_are('identity', 'events', 'service_role',
  array['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'service_role has SELECT, INSERT, UPDATE, DELETE on events');
select table_privs_are('identity', 'users', 'authenticator', array[]::text[],
  'authenticator itself has no privilege on users');
select table_privs_are('identity', 'conversations', 'authenticator', array[]::text[],
  'authenticator itself has no privilege on conversations');
select table_privs_are('identity', 'events', 'authenticator', array[]::text[],
  'authenticator itself has no privilege on events');
select is_empty(
  $$ select c.relname || ': ' || a.privilege_type
     from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace,
     aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) as a
     where n.nspname = 'identity' and a.grantee = 0 $$,
  'PUBLIC has no privilege on any identity relation');
select is_empty(
  $$ select c.relname || '.' || a.attname from pg_catalog.pg_attribute as a
     join pg_catalog.pg_class as c on c.oid = a.attrelid
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and a.attacl is not null $$,
  'no column-level grants widen the table grants');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('r', 'p', 'v', 'm')
       and (has_table_privilege('anon', c.oid, 'select')
            or has_table_privilege('anon', c.oid, 'insert')
            or has_table_privilege('anon', c.oid, 'update')
            or has_table_privilege('anon', c.oid, 'delete')) $$,
  'anon holds no table privilege on any identity relation (future ones included)');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('r', 'p', 'v', 'm')
       and (has_table_privilege('authenticated', c.oid, 'insert')
            or has_table_privilege('authenticated', c.oid, 'update')
            or has_table_privilege('authenticated', c.oid, 'delete')
            or has_table_privilege('authenticated', c.oid, 'truncate')) $$,
  'authenticated holds no write privilege on any identity relation (future ones included)');

-- ---------------------------------------------------------------------------------------------
-- The roles themselves, as Supabase defines them.
-- ---------------------------------------------------------------------------------------------
select is((select rolbypassrls from pg_catalog.pg_roles where rolname = 'service_role'), true,
  'service_role bypasses RLS');
select is((select rolbypassrls from pg_catalog.pg_roles where rolname = 'authenticated'), false,
  'authenticated does not bypass RLS');
select is((select rolbypassrls from pg_catalog.pg_roles where rolname = 'anon'), false,
  'anon does not bypass RLS');
select set_eq(
  $$ select r.rolname::text from pg_catalog.pg_auth_members as m
     join pg_catalog.pg_roles as r on r.oid = m.roleid
     where m.member = 'authenticator'::regrole $$,
  array['anon', 'authenticated', 'service_role'],
  'authenticator can switch to anon, authenticated and service_role only');
select is(
  (select rolsuper or rolcreaterole or rolcreatedb from pg_catalog.pg_roles
   where rolname = 'authenticator'),
  false, 'authenticator is not privileged');
select is(pg_has_role('authenticator', 'postgres', 'member'), false,
  'authenticator cannot become postgres');

select * from finish();
rollback;
