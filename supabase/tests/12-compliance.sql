-- =============================================================================================
-- Shopify compliance: identity.redact_shop erases one shop (user, conversations, events,
-- archived events) and nobody else, returns counts, is idempotent, and audits each call in
-- identity.compliance_audit, which holds a keyed hash and never the domain and which anon and
-- authenticated cannot touch. identity.shop_data_summary counts and audits.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(27);

-- ---------------------------------------------------------------------------------------------
-- Grants and shape
-- ---------------------------------------------------------------------------------------------
select table_privs_are('identity', 'compliance_audit', 'anon', array[]::text[],
  'anon has no privilege on compliance_audit');
select table_privs_are('identity', 'compliance_audit', 'authenticated', array[]::text[],
  'authenticated has no privilege on compliance_audit');
select table_privs_are('identity', 'compliance_audit', 'service_role', array['SELECT', 'INSERT'],
  'service_role can only SELECT and INSERT compliance_audit (append-only)');
select is(
  (select c.relrowsecurity from pg_catalog.pg_class as c
   where c.oid = 'identity.compliance_audit'::regclass),
  true, 'RLS is enabled on compliance_audit');
select function_privs_are('identity', 'redact_shop', array['text', 'text'], 'anon',
  array[]::text[], 'anon cannot execute redact_shop');
select function_privs_are('identity', 'redact_shop', array['text', 'text'], 'authenticated',
  array[]::text[], 'authenticated cannot execute redact_shop');
select function_privs_are('identity', 'redact_shop', array['text', 'text'], 'service_role',
  array['EXECUTE'], 'service_role can execute redact_shop');
select function_privs_are('identity', 'shop_data_summary', array['text', 'text', 'text'],
  'authenticated', array[]::text[], 'authenticated cannot execute shop_data_summary');
select function_privs_are('identity', 'shop_data_summary', array['text', 'text', 'text'],
  'service_role', array['EXECUTE'], 'service_role can execute shop_data_summary');
select is(
  (select p.prosecdef from pg_catalog.pg_proc as p
   where p.oid = 'identity.redact_shop(text, text)'::regprocedure),
  false, 'redact_shop runs with the caller''s rights (SECURITY INVOKER)');

-- ---------------------------------------------------------------------------------------------
-- Behaviour, as the backend (service_role)
-- ---------------------------------------------------------------------------------------------
select tests.create_fixture_users();
insert into identity.events_archive (id, user_id, event_type, event_data, created_at, received_at)
values ('aa000000-0000-4000-8000-000000000009', 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'login', '{}',
        '2025-01-01 09:00+00', '2025-01-01 09:00+00');
select tests.authenticate_as_service();

select is(
  identity.shop_data_summary('tap-shop-a.myshopify.com', repeat('c', 64), 'customers/data_request'),
  '{"users": 1, "conversations": 3, "events": 3, "events_archive": 1,
    "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa"}'::jsonb,
  'shop_data_summary counts what the database holds for the shop');
select is(
  identity.redact_shop('  TAP-Shop-A.myshopify.com ', repeat('a', 64)),
  '{"users": 1, "conversations": 3, "events": 3, "events_archive": 1,
    "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa"}'::jsonb,
  'redact_shop deletes the (normalized) shop''s rows and returns the counts');
select is_empty($$ select 1 from identity.users where id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  'the user is gone');
select is_empty(
  $$ select 1 from identity.conversations where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  'its conversations are gone');
select is_empty($$ select 1 from identity.events where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  'its events are gone');
select is_empty(
  $$ select 1 from identity.events_archive where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  'its archived events are gone');
select is((select count(*)::int from identity.conversations
           where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb'), 1,
  'another shop''s conversations are untouched');
select is((select count(*)::int from identity.events
           where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb'), 1,
  'another shop''s events are untouched');
select is(
  identity.redact_shop('tap-shop-a.myshopify.com', repeat('a', 64)),
  '{"users": 0, "conversations": 0, "events": 0, "events_archive": 0, "user_id": null}'::jsonb,
  'a second call finds nothing and succeeds');
select is(
  (select count(*)::int from identity.compliance_audit where shop_hash = repeat('a', 64)),
  2, 'each redaction wrote one audit row');
select is(
  (select topic from identity.compliance_audit where shop_hash = repeat('c', 64)),
  'customers/data_request', 'the data request was audited under its topic');
select is_empty(
  $$ select 1 from identity.compliance_audit as a
     where a.counts::text like '%myshopify%' or a.shop_hash like '%myshopify%' $$,
  'no audit row holds a shop domain');
select throws_ok(
  $$ select identity.redact_shop('tap-shop-b.myshopify.com', 'tap-shop-b.myshopify.com') $$,
  '23514', null, 'a shop_hash that is not a hex digest is refused (never stored)');
select is((select count(*)::int from identity.users where id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb'), 1,
  '... and the refused call deleted nothing (one transaction)');
select throws_ok(
  $$ update identity.compliance_audit set topic = 'shop/redact' $$,
  '42501', null, 'service_role cannot rewrite the audit');

-- ---------------------------------------------------------------------------------------------
-- Other roles
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_bbbbbbbbbbbbbbbbbbbbbbbb');
select throws_ok(
  $$ select identity.redact_shop('tap-shop-b.myshopify.com', repeat('b', 64)) $$,
  '42501', null, 'a user-scoped token cannot call redact_shop');
select throws_ok($$ select * from identity.compliance_audit $$, '42501', null,
  'a user-scoped token cannot read the audit');

select * from finish();
rollback;
