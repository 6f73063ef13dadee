-- =============================================================================================
-- identity.get_user_profile(user_id) → jsonb: the user row plus conversation and event stats in
-- one call; null for an unknown user, and null for a user-scoped caller asking about someone else.
-- Fixture (see _helpers.psql): user A has 3 conversations (2 + 3 + 0 messages, started
-- 2026-01-01, -03, -02) and 3 events; user B has 1 conversation (1 message) and 1 event.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(22);

select tests.create_fixture_users();
insert into identity.users (id, shop_domain)
values ('usr_eeeeeeeeeeeeeeeeeeeeeeee', 'tap-profile-empty.myshopify.com');

-- ---------------------------------------------------------------------------------------------
-- As the backend.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service();

create temporary table profile_a on commit drop as
  select identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') as p;

select is((select p ->> 'user_id' from profile_a), 'usr_aaaaaaaaaaaaaaaaaaaaaaaa',
  'the profile carries the user id');
select is((select p ->> 'shop_domain' from profile_a), 'tap-shop-a.myshopify.com',
  'the profile carries the shop domain');
select is((select p ->> 'email' from profile_a), 'a@example.com', 'the profile carries the email');
select is((select p ->> 'name' from profile_a), 'Shop A', 'the profile carries the name');
select ok((select p ? 'created_at' and p ? 'last_seen' and p ? 'metadata' from profile_a),
  'the profile carries created_at, last_seen and metadata');
select is((select (p -> 'stats' ->> 'total_conversations')::int from profile_a), 3,
  'stats.total_conversations counts the user''s conversations only');
select is((select (p -> 'stats' ->> 'total_messages')::int from profile_a), 5,
  'stats.total_messages sums message_count (2 + 3 + 0)');
select is((select (p -> 'stats' ->> 'first_conversation')::timestamptz from profile_a),
  '2026-01-01 10:00+00'::timestamptz, 'stats.first_conversation is the earliest started_at');
select is((select (p -> 'stats' ->> 'last_conversation')::timestamptz from profile_a),
  '2026-01-03 10:00+00'::timestamptz, 'stats.last_conversation is the latest started_at');
select is((select (p -> 'stats' ->> 'total_events')::int from profile_a), 3,
  'stats.total_events counts the user''s events only');

select is(
  identity.get_user_profile('usr_bbbbbbbbbbbbbbbbbbbbbbbb') -> 'stats',
  jsonb_build_object('total_conversations', 1, 'total_messages', 1,
                     'first_conversation', '2026-02-01T10:00:00+00:00',
                     'last_conversation', '2026-02-01T10:00:00+00:00', 'total_events', 1),
  'user B''s stats are its own');
select is(
  identity.get_user_profile('usr_eeeeeeeeeeeeeeeeeeeeeeee') -> 'stats',
  jsonb_build_object('total_conversations', 0, 'total_messages', 0,
                     'first_conversation', null, 'last_conversation', null, 'total_events', 0),
  'a user with no activity: zero counts and null first/last');
select is(identity.get_user_profile('usr_ffffffffffffffffffffffff'), null,
  'an unknown user id → null');
select is(identity.get_user_profile(null), null, 'a null user id → null');

-- A conversation that gains messages shows up in the next call.
select tests.clear_authentication();
update identity.conversations
  set messages = messages || '[{"role":"assistant","content":"more"}]'::jsonb
  where id = 'a0000000-0000-4000-8000-000000000003';
select tests.authenticate_as_service();
select is(
  (identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') -> 'stats' ->> 'total_messages')::int,
  6, 'stats follow new messages');

-- ---------------------------------------------------------------------------------------------
-- As user-scoped callers: own profile only.
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');
select is(
  identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') ->> 'user_id',
  'usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'user A reads its own profile');
select is(
  (identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') -> 'stats' ->> 'total_conversations')::int,
  3, '... with its own stats');
select is(identity.get_user_profile('usr_bbbbbbbbbbbbbbbbbbbbbbbb'), null,
  'user A gets null for user B''s profile');
select tests.clear_authentication();

select tests.authenticate_as('usr_bbbbbbbbbbbbbbbbbbbbbbbb');
select is(identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa'), null,
  'user B gets null for user A''s profile');
select is(
  (identity.get_user_profile('usr_bbbbbbbbbbbbbbbbbbbbbbbb') -> 'stats' ->> 'total_events')::int,
  1, 'user B reads its own profile');
select tests.clear_authentication();

select tests.authenticate_with_claims('{"role":"authenticated"}');
select is(identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa'), null,
  'a token without a user id gets null for any profile');
select tests.clear_authentication();

select tests.authenticate_as_anon();
select throws_ok($$ select identity.get_user_profile('usr_aaaaaaaaaaaaaaaaaaaaaaaa') $$,
  '42501', null, 'anon cannot call get_user_profile at all');
select tests.clear_authentication();

select * from finish();
rollback;
