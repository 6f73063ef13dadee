-- =============================================================================================
-- Every API role's allowed and denied reads and writes, exercised the way PostgREST runs a
-- request (role switched, claims set):
--   anon            nothing: every read, write and function call fails with 42501
--   authenticated   a user-scoped token reads its own rows only, writes nothing
--   service_role    the backend: reads everything, inserts, updates, upserts and deletes
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(74);

select tests.create_fixture_users();
-- A conversation nobody owns yet (archived before its user was known).
insert into identity.conversations (id, user_id, started_at, messages)
values ('00000000-0000-4000-8000-0000000000aa', null, '2026-01-05 00:00+00', '[{"role":"user"}]');

-- ---------------------------------------------------------------------------------------------
-- anon: the public key. No schema usage, so every statement is refused.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_anon();

select throws_ok($$ select * from identity.users $$, '42501', null,
  'anon cannot read users');
select throws_ok($$ select * from identity.conversations $$, '42501', null,
  'anon cannot read conversations');
select throws_ok($$ select * from identity.events $$, '42501', null,
  'anon cannot read events');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_cccccccccccccccccccccccc', 'anon-write.myshopify.com') $$,
  '42501', null, 'anon cannot insert users');
select throws_ok(
  $$ insert into identity.conversations (id, started_at) values (gen_random_uuid(), now()) $$,
  '42501', null, 'anon cannot insert conversations');
select throws_ok(
  $$ insert into identity.events (user_id, event_type)
     values ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'login') $$,
  '42501', null, 'anon cannot insert events');
select throws_ok($$ update identity.users set name = 'pwned' $$, '42501', null,
  'anon cannot update users');
select throws_ok($$ update identity.conversations set messages = '[]' $$, '42501', null,
  'anon cannot update conversations');
select throws_ok($$ update identity.events set event_data = '{}' $$, '42501', null,
  'anon cannot update events');
select throws_ok($$ delete from identity.users $$, '42501', null, 'anon cannot delete users');
select throws_ok($$ delete from identity.conversations $$, '42501', null,
  'anon cannot delete conversations');
select throws_ok($$ delete from identity.events $$, '42501', null, 'anon cannot delete events');
select throws_ok($$ select * from identity.get_or_create_user('anon-rpc.myshopify.com') $$,
  '42501', null, 'anon cannot call get_or_create_user');
select throws_ok($$ select identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') $$,
  '42501', null, 'anon cannot call get_user_profile');
select throws_ok($$ select * from identity.record_events('[]') $$,
  '42501', null, 'anon cannot call record_events');
select throws_ok($$ select * from identity.archive_conversations('[]') $$,
  '42501', null, 'anon cannot call archive_conversations');
select throws_ok($$ select * from identity.link_conversations('[]') $$,
  '42501', null, 'anon cannot call link_conversations');
select throws_ok($$ select identity.health() $$,
  '42501', null, 'anon cannot call health');

select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- authenticated, user A: own rows only, no writes.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');

select results_eq($$ select id from identity.users $$,
  array['usr_aaaaaaaaaaaaaaaaaaaaaaaa'], 'user A reads exactly its own users row');
select set_eq($$ select id from identity.conversations $$,
  array['a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        'a0000000-0000-4000-8000-000000000003']::uuid[],
  'user A reads exactly its own conversations');
select set_eq($$ select id from identity.events $$,
  array['ae000000-0000-4000-8000-000000000001', 'ae000000-0000-4000-8000-000000000002',
        'ae000000-0000-4000-8000-000000000003']::uuid[],
  'user A reads exactly its own events');
select is_empty($$ select * from identity.users where id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$,
  'user A gets 0 rows of user B from users');
select is_empty(
  $$ select * from identity.conversations where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$,
  'user A gets 0 rows of user B from conversations');
select is_empty(
  $$ select * from identity.events where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$,
  'user A gets 0 rows of user B from events');
select is_empty(
  $$ select * from identity.conversations where user_id is null $$,
  'user A does not see unowned conversations');
select is(
  (select message_count from identity.conversations
   where id = 'a0000000-0000-4000-8000-000000000002'),
  3, 'user A reads message_count of its own conversation');

select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_cccccccccccccccccccccccc', 'user-write.myshopify.com') $$,
  '42501', null, 'user A cannot insert users');
select throws_ok(
  $$ insert into identity.conversations (id, user_id, started_at)
     values (gen_random_uuid(), 'usr_aaaaaaaaaaaaaaaaaaaaaaaa', now()) $$,
  '42501', null, 'user A cannot insert conversations, not even its own');
select throws_ok(
  $$ insert into identity.events (user_id, event_type)
     values ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'login') $$,
  '42501', null, 'user A cannot insert events, not even its own');
select throws_ok(
  $$ update identity.users set name = 'renamed' where id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot update its own users row');
select throws_ok(
  $$ update identity.users set name = 'renamed' where id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' $$,
  '42501', null, 'user A cannot update user B');
select throws_ok(
  $$ update identity.conversations set messages = '[]'
     where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot update conversations');
select throws_ok(
  $$ update identity.events set event_data = '{}'
     where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot update events');
select throws_ok(
  $$ delete from identity.users where id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot delete its users row');
select throws_ok(
  $$ delete from identity.conversations where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot delete conversations');
select throws_ok(
  $$ delete from identity.events where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' $$,
  '42501', null, 'user A cannot delete events');
select throws_ok($$ truncate identity.events $$, '42501', null,
  'user A cannot truncate events');
select throws_ok($$ select * from identity.get_or_create_user('user-rpc.myshopify.com') $$,
  '42501', null, 'user A cannot call get_or_create_user');
select throws_ok(
  $$ select * from identity.record_events(
       '[{"id":"ae000000-0000-4000-8000-0000000000ff","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa","event_type":"login"}]') $$,
  '42501', null, 'user A cannot call record_events');
select throws_ok(
  $$ select * from identity.archive_conversations(
       '[{"id":"a0000000-0000-4000-8000-000000000001","messages":[]}]') $$,
  '42501', null, 'user A cannot call archive_conversations');
select throws_ok(
  $$ select * from identity.link_conversations(
       '[{"id":"00000000-0000-4000-8000-0000000000aa","user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa"}]') $$,
  '42501', null, 'user A cannot call link_conversations');
select throws_ok($$ select identity.health() $$,
  '42501', null, 'user A cannot call health');

select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- authenticated, user B: the mirror image.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_bbbbbbbbbbbbbbbbbbbbbbbb');
select results_eq($$ select id from identity.users $$,
  array['usr_bbbbbbbbbbbbbbbbbbbbbbbb'], 'user B reads exactly its own users row');
select results_eq($$ select id from identity.conversations $$,
  array['b0000000-0000-4000-8000-000000000001'::uuid], 'user B reads exactly its own conversation');
select results_eq($$ select id from identity.events $$,
  array['be000000-0000-4000-8000-000000000001'::uuid], 'user B reads exactly its own event');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- authenticated without a usable user id: sees nothing.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_with_claims('{"role":"authenticated","aud":"authenticated"}');
select is_empty($$ select * from identity.users $$,
  'a token without app_metadata.user_id reads no users');
select is_empty($$ select * from identity.conversations $$,
  'a token without app_metadata.user_id reads no conversations');
select is_empty($$ select * from identity.events $$,
  'a token without app_metadata.user_id reads no events');
select tests.authenticate_with_claims(
  '{"role":"authenticated","user_metadata":{"user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa"},"user_id":"usr_aaaaaaaaaaaaaaaaaaaaaaaa"}');
select is_empty($$ select * from identity.conversations $$,
  'user_metadata.user_id (user-editable in Supabase Auth) or a top-level user_id grant nothing');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- service_role: the backend.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service();

select is(
  (select count(*)::int from identity.users
   where id in ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb')),
  2, 'service_role reads every user');
select is(
  (select count(*)::int from identity.conversations
   where user_id in ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb')
      or id = '00000000-0000-4000-8000-0000000000aa'),
  5, 'service_role reads every conversation, unowned included');
select is(
  (select count(*)::int from identity.events
   where user_id in ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb')),
  4, 'service_role reads every event');

select lives_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_cccccccccccccccccccccccc', 'tap-shop-c.myshopify.com') $$,
  'service_role inserts users');
select lives_ok(
  $$ insert into identity.conversations (id, user_id, started_at, messages)
     values ('c0000000-0000-4000-8000-000000000001', 'usr_cccccccccccccccccccccccc',
             '2026-03-01 00:00+00', '[{"role":"user","content":"v1"}]') $$,
  'service_role inserts conversations');
select lives_ok(
  $$ insert into identity.conversations (id, user_id, started_at, messages)
     values ('c0000000-0000-4000-8000-000000000001', 'usr_cccccccccccccccccccccccc',
             '2026-03-01 00:00+00',
             '[{"role":"user","content":"v1"},{"role":"assistant","content":"v2"}]')
     on conflict (id) do update
       set messages = excluded.messages, ended_at = excluded.ended_at $$,
  'service_role upserts conversations (what PostgREST merge-duplicates runs)');
select is(
  (select messages -> 1 ->> 'content' from identity.conversations
   where id = 'c0000000-0000-4000-8000-000000000001'),
  'v2', '... and the upsert replaced the messages');
select is(
  (select message_count from identity.conversations
   where id = 'c0000000-0000-4000-8000-000000000001'),
  2, '... and message_count follows');
select lives_ok(
  $$ insert into identity.events (id, user_id, event_type)
     values ('ce000000-0000-4000-8000-000000000001', 'usr_cccccccccccccccccccccccc', 'login') $$,
  'service_role inserts events');
select lives_ok(
  $$ update identity.users set name = 'Shop C' where id = 'usr_cccccccccccccccccccccccc' $$,
  'service_role updates users');
select is((select name from identity.users where id = 'usr_cccccccccccccccccccccccc'),
  'Shop C', '... and the update took effect');
select lives_ok(
  $$ update identity.conversations set user_id = 'usr_cccccccccccccccccccccccc'
     where id = '00000000-0000-4000-8000-0000000000aa' $$,
  'service_role updates conversations (links an unowned one)');
select lives_ok(
  $$ update identity.events set event_data = '{"edited":true}'
     where id = 'ce000000-0000-4000-8000-000000000001' $$,
  'service_role updates events');
select lives_ok(
  $$ delete from identity.events where id = 'ce000000-0000-4000-8000-000000000001' $$,
  'service_role deletes events');
select is_empty(
  $$ select 1 from identity.events where id = 'ce000000-0000-4000-8000-000000000001' $$,
  '... and the event is gone');
select lives_ok(
  $$ delete from identity.conversations where id = 'c0000000-0000-4000-8000-000000000001' $$,
  'service_role deletes conversations');
select lives_ok(
  $$ delete from identity.users where id = 'usr_cccccccccccccccccccccccc' $$,
  'service_role deletes users');
select is(
  (select count(*)::int from identity.conversations
   where id = '00000000-0000-4000-8000-0000000000aa'),
  0, '... and the user''s conversations went with it (cascade)');
select throws_ok($$ truncate identity.events $$, '42501', null,
  'service_role cannot truncate (not granted)');
select lives_ok(
  $$ select * from identity.get_or_create_user('tap-shop-d.myshopify.com') $$,
  'service_role calls get_or_create_user');
select lives_ok(
  $$ select * from identity.record_events('[]') $$, 'service_role calls record_events');
select isnt(identity.get_user_profile('usr_bbbbbbbbbbbbbbbbbbbbbbbb'), null,
  'service_role reads any profile');
select lives_ok($$ select identity.health() $$, 'service_role calls health');

select tests.clear_authentication();

-- Back as the superuser: the fixture is intact after everything the API roles were refused.
select is((select count(*)::int from identity.users
           where id in ('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'usr_bbbbbbbbbbbbbbbbbbbbbbbb')),
  2, 'users A and B still exist');
select is((select name from identity.users where id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb'),
  'Shop B', 'user B was not renamed');

select * from finish();
rollback;
