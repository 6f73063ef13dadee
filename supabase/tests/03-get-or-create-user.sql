-- =============================================================================================
-- identity.get_or_create_user(shop_domain, email, name, shopify_id) → (user_id, is_new),
-- called as service_role the way the SDK calls it through PostgREST.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(38);

select tests.authenticate_as_service();

-- First sight of a shop creates the user.
create temporary table goc_first on commit drop as
  select * from identity.get_or_create_user('tap-goc-one.myshopify.com', 'owner@example.com',
                                            'Goc One', '1001');

select is((select count(*)::int from goc_first), 1, 'returns exactly one row');
select is((select is_new from goc_first), true, 'a new shop → is_new = true');
select matches((select user_id from goc_first), '^usr_[a-z0-9]{16,}$',
  'the id is usr_ + at least 16 lowercase base32/hex characters');
select is(
  (select row(shop_domain, email, name, shopify_id)::text from identity.users
   where id = (select user_id from goc_first)),
  row('tap-goc-one.myshopify.com', 'owner@example.com', 'Goc One', '1001')::text,
  'the users row holds the shop and the given details');

-- Same shop again.
select results_eq(
  $$ select user_id, is_new from identity.get_or_create_user('tap-goc-one.myshopify.com') $$,
  $$ select user_id, false from goc_first $$,
  'the same shop again → the same id and is_new = false');
select results_eq(
  $$ select user_id, is_new
     from identity.get_or_create_user('  TAP-Goc-One.MyShopify.COM  ') $$,
  $$ select user_id, false from goc_first $$,
  'case and surrounding whitespace are normalized: same user');
select is(
  (select count(*)::int from identity.users where shop_domain like 'tap-goc-one%'),
  1, 'still exactly one row for the shop');
select is(
  (select shop_domain from identity.users where id = (select user_id from goc_first)),
  'tap-goc-one.myshopify.com', 'the stored shop domain is the normalized one');

-- Details: kept when not given, replaced when a new non-empty value is given.
select is((select email from identity.users where id = (select user_id from goc_first)),
  'owner@example.com', 'a later call with email null keeps the email');
do $$ begin perform identity.get_or_create_user('tap-goc-one.myshopify.com', '', '  ', ''); end $$;
select is(
  (select row(email, name, shopify_id)::text from identity.users
   where id = (select user_id from goc_first)),
  row('owner@example.com', 'Goc One', '1001')::text,
  'empty or blank values keep the stored email, name and shopify_id');
do $$ begin perform identity.get_or_create_user('tap-goc-one.myshopify.com', 'new@example.com'); end $$;
select is((select email from identity.users where id = (select user_id from goc_first)),
  'new@example.com', 'a new non-empty email replaces the old one');
select is((select name from identity.users where id = (select user_id from goc_first)),
  'Goc One', '... and leaves the name alone');
do $$ begin perform identity.get_or_create_user('tap-goc-one.myshopify.com', null, 'Goc Renamed', '2002'); end $$;
select is(
  (select row(email, name, shopify_id)::text from identity.users
   where id = (select user_id from goc_first)),
  row('new@example.com', 'Goc Renamed', '2002')::text,
  'new name and shopify_id replace the old ones; the email is kept');
do $$ begin perform identity.get_or_create_user('tap-goc-one.myshopify.com', '  spaced@example.com  '); end $$;
select is((select email from identity.users where id = (select user_id from goc_first)),
  'spaced@example.com', 'the email is trimmed');

-- last_seen is bumped on every call.
select tests.clear_authentication();
update identity.users set last_seen = '2000-01-01 00:00+00'
  where id = (select user_id from goc_first);
select tests.authenticate_as_service();
do $$ begin perform identity.get_or_create_user('tap-goc-one.myshopify.com'); end $$;
select is((select last_seen from identity.users where id = (select user_id from goc_first)),
  now(), 'a returning shop bumps last_seen');

-- Invalid input.
select throws_ok($$ select * from identity.get_or_create_user('not a domain') $$,
  '23514', null, 'an invalid shop domain raises 23514');
select throws_ok($$ select * from identity.get_or_create_user('shop.example.com') $$,
  '23514', null, 'a domain outside .myshopify.com raises 23514');
select throws_ok($$ select * from identity.get_or_create_user('-dash.myshopify.com') $$,
  '23514', null, 'a shop name starting with a dash raises 23514');
select throws_ok($$ select * from identity.get_or_create_user('') $$,
  '23514', null, 'an empty shop domain raises 23514');
select throws_ok($$ select * from identity.get_or_create_user(null) $$,
  '23502', null, 'a null shop domain raises 23502');
select throws_ok(
  $$ select * from identity.get_or_create_user('tap-goc-two.myshopify.com', repeat('e', 300)) $$,
  '23514', null, 'an over-long email raises 23514');
select is_empty($$ select 1 from identity.users where shop_domain = 'tap-goc-two.myshopify.com' $$,
  '... and creates nothing');

-- Two shops, two users; ids are random, never derived from the shop domain.
select isnt(
  (select user_id from identity.get_or_create_user('tap-goc-two.myshopify.com')),
  (select user_id from goc_first), 'two shops → two different ids');
select is(
  (select strpos(user_id, 'abcdefabcdef') from
     identity.get_or_create_user('abcdefabcdef.myshopify.com')),
  0, 'the id does not contain the shop name (even a hex-looking one)');
select is(
  (select strpos(id, 'tap') + strpos(id, 'goc') + strpos(id, 'myshopify') from identity.users
   where id = (select user_id from goc_first)),
  0, 'the id contains no part of the shop domain');
select isnt(
  (select user_id from goc_first),
  'usr_' || left(md5('tap-goc-one.myshopify.com'), 24),
  'the id is not an md5 of the shop domain');

create temporary table goc_many on commit drop as
  select g.i, u.user_id, u.is_new
  from generate_series(1, 200) as g (i),
       lateral identity.get_or_create_user('tap-goc-many-' || g.i || '.myshopify.com') as u;
select is((select count(distinct user_id)::int from goc_many), 200,
  '200 new shops → 200 distinct ids');
select is((select bool_and(is_new) from goc_many), true, '... all reported new');

-- Deleting and re-creating a shop gives a new id: nothing about the id is deterministic.
select tests.clear_authentication();
create temporary table goc_old on commit drop as
  select user_id from identity.get_or_create_user('tap-goc-three.myshopify.com');
delete from identity.users where id = (select user_id from goc_old);
select results_ne(
  $$ select user_id from identity.get_or_create_user('tap-goc-three.myshopify.com') $$,
  $$ select user_id from goc_old $$,
  'the same shop re-created after deletion gets a fresh random id');
select is(
  (select is_new from identity.get_or_create_user('tap-goc-four.myshopify.com')),
  true, 'is_new = true for the creating call ...');
select is(
  (select is_new from identity.get_or_create_user('tap-goc-four.myshopify.com')),
  false, '... and false for the next one in the same transaction');

-- A retried call (same client-generated new_id) still learns that the user is new; another
-- call does not; the id is the client's candidate.
select results_eq(
  $$ select user_id, is_new from identity.get_or_create_user(
       'tap-goc-retry.myshopify.com', new_id => 'usr_0123456789abcdef0123') $$,
  $$ values ('usr_0123456789abcdef0123'::text, true) $$,
  'a new shop is created under the client''s candidate id');
select results_eq(
  $$ select user_id, is_new from identity.get_or_create_user(
       'tap-goc-retry.myshopify.com', new_id => 'usr_0123456789abcdef0123') $$,
  $$ values ('usr_0123456789abcdef0123'::text, true) $$,
  'a retry with the same candidate id still reports is_new = true');
select results_eq(
  $$ select user_id, is_new from identity.get_or_create_user(
       'tap-goc-retry.myshopify.com', new_id => 'usr_fedcba9876543210fedc') $$,
  $$ values ('usr_0123456789abcdef0123'::text, false) $$,
  'another call (another candidate) gets the same user and is_new = false');
select throws_ok(
  $$ select identity.get_or_create_user('tap-goc-bad-id.myshopify.com', new_id => 'nope') $$,
  '23514', null, 'a candidate id that is not usr_… is refused by the check constraint');

-- Durability: creating a user or changing its details waits for the WAL flush; a pure touch
-- (only last_seen changes) commits asynchronously. Last in the file: the setting is
-- transaction-local and stays off once a touch has set it.
select identity.get_or_create_user('tap-goc-sync.myshopify.com');
select is(current_setting('synchronous_commit'), 'on', 'a new user commits synchronously');
select identity.get_or_create_user('tap-goc-sync.myshopify.com', 'new@example.com');
select is(current_setting('synchronous_commit'), 'on',
  'a returning user with a changed email commits synchronously');
select identity.get_or_create_user('tap-goc-sync.myshopify.com', 'new@example.com');
select is(current_setting('synchronous_commit'), 'off',
  'a returning user with nothing new (a touch) commits asynchronously');

select * from finish();
rollback;
