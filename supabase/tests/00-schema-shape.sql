-- =============================================================================================
-- Schema shape: the identity schema's tables, columns and types, keys, the generated
-- message_count, indexes (a user's conversations newest first; every foreign key indexed), check
-- constraints and the updated_at triggers.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(94);

-- ---------------------------------------------------------------------------------------------
-- Objects
-- ---------------------------------------------------------------------------------------------
select has_schema('identity', 'schema identity exists');
select tables_are('identity',
  array['users', 'conversations', 'events', 'events_archive', 'compliance_audit'],
  'identity has exactly the tables users, conversations, events, events_archive, compliance_audit');
select functions_are('identity',
  array['analyze_tables', 'archive_conversations', 'archive_old_events',
        'conversation_search_vector', 'conversation_snippet', 'delete_unlinked_conversations',
        'get_or_create_user', 'get_user_profile', 'health', 'link_conversations',
        'record_events', 'redact_shop', 'search_config', 'search_conversations',
        'set_conversation_search', 'set_updated_at', 'shop_data_summary', 'stats'],
  'identity has exactly the expected functions');
select is_empty(
  $$ select c.relname from pg_catalog.pg_class as c
     join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where n.nspname = 'identity' and c.relkind in ('v', 'm', 'S', 'f') $$,
  'identity has no views, materialized views, sequences or foreign tables');

-- ---------------------------------------------------------------------------------------------
-- identity.users
-- ---------------------------------------------------------------------------------------------
select columns_are('identity', 'users',
  array['id', 'shop_domain', 'shopify_id', 'email', 'name', 'metadata', 'created_at',
        'last_seen', 'updated_at'],
  'users has the expected columns');
select col_type_is('identity', 'users', 'id', 'text', 'users.id is text');
select col_type_is('identity', 'users', 'shop_domain', 'text', 'users.shop_domain is text');
select col_type_is('identity', 'users', 'shopify_id', 'text', 'users.shopify_id is text');
select col_type_is('identity', 'users', 'email', 'text', 'users.email is text');
select col_type_is('identity', 'users', 'name', 'text', 'users.name is text');
select col_type_is('identity', 'users', 'metadata', 'jsonb', 'users.metadata is jsonb');
select col_type_is('identity', 'users', 'created_at', 'timestamp with time zone',
  'users.created_at is timestamptz');
select col_type_is('identity', 'users', 'last_seen', 'timestamp with time zone',
  'users.last_seen is timestamptz');
select col_type_is('identity', 'users', 'updated_at', 'timestamp with time zone',
  'users.updated_at is timestamptz');
select col_is_pk('identity', 'users', 'id', 'users.id is the primary key');
select col_is_unique('identity', 'users', array['shop_domain'], 'users.shop_domain is unique');
select set_eq(
  $$ select attname::text from pg_catalog.pg_attribute
     where attrelid = 'identity.users'::regclass and attnum > 0 and not attisdropped
       and attnotnull $$,
  array['id', 'shop_domain', 'metadata', 'created_at', 'last_seen', 'updated_at'],
  'users: exactly id, shop_domain, metadata and the timestamps are NOT NULL');
select col_default_is('identity', 'users', 'metadata', '{}'::jsonb, 'users.metadata defaults to {}');
select col_hasnt_default('identity', 'users', 'id', 'users.id has no default (made by get_or_create_user)');

-- ---------------------------------------------------------------------------------------------
-- identity.conversations
-- ---------------------------------------------------------------------------------------------
select columns_are('identity', 'conversations',
  array['id', 'source_id', 'user_id', 'merchant_id', 'workflow_name', 'started_at', 'ended_at',
        'messages', 'message_count', 'metadata', 'created_at', 'updated_at', 'archived_at',
        'search'],
  'conversations has the expected columns');
select col_type_is('identity', 'conversations', 'id', 'uuid', 'conversations.id is uuid');
select col_type_is('identity', 'conversations', 'source_id', 'text', 'conversations.source_id is text');
select col_type_is('identity', 'conversations', 'user_id', 'text', 'conversations.user_id is text');
select col_type_is('identity', 'conversations', 'merchant_id', 'text',
  'conversations.merchant_id is text');
select col_type_is('identity', 'conversations', 'workflow_name', 'text',
  'conversations.workflow_name is text');
select col_type_is('identity', 'conversations', 'started_at', 'timestamp with time zone',
  'conversations.started_at is timestamptz');
select col_type_is('identity', 'conversations', 'ended_at', 'timestamp with time zone',
  'conversations.ended_at is timestamptz');
select col_type_is('identity', 'conversations', 'messages', 'jsonb',
  'conversations.messages is jsonb');
select col_type_is('identity', 'conversations', 'message_count', 'integer',
  'conversations.message_count is integer');
select col_type_is('identity', 'conversations', 'metadata', 'jsonb',
  'conversations.metadata is jsonb');
select col_type_is('identity', 'conversations', 'created_at', 'timestamp with time zone',
  'conversations.created_at is timestamptz');
select col_type_is('identity', 'conversations', 'updated_at', 'timestamp with time zone',
  'conversations.updated_at is timestamptz');
select col_type_is('identity', 'conversations', 'archived_at', 'timestamp with time zone',
  'conversations.archived_at is timestamptz');
select col_type_is('identity', 'conversations', 'search', 'tsvector',
  'conversations.search is tsvector');
select col_is_pk('identity', 'conversations', 'id', 'conversations.id is the primary key');
select fk_ok('identity', 'conversations', 'user_id', 'identity', 'users', 'id',
  'conversations.user_id references users.id');
select is(
  (select confdeltype::text from pg_catalog.pg_constraint
   where conname = 'conversations_user_id_fkey' and conrelid = 'identity.conversations'::regclass),
  'c', 'deleting a user cascades to its conversations');
select col_is_null('identity', 'conversations', 'user_id',
  'conversations.user_id is nullable (owner may be learned later)');
select set_eq(
  $$ select attname::text from pg_catalog.pg_attribute
     where attrelid = 'identity.conversations'::regclass and attnum > 0 and not attisdropped
       and attnotnull $$,
  array['id', 'started_at', 'messages', 'metadata', 'created_at', 'updated_at', 'archived_at',
        'search'],
  'conversations: exactly the expected columns are NOT NULL');
select is(
  (select attgenerated::text from pg_catalog.pg_attribute
   where attrelid = 'identity.conversations'::regclass and attname = 'message_count'),
  's', 'conversations.message_count is a stored generated column');
select is(
  (select pg_catalog.pg_get_expr(d.adbin, d.adrelid) from pg_catalog.pg_attrdef as d
   join pg_catalog.pg_attribute as a on a.attrelid = d.adrelid and a.attnum = d.adnum
   where d.adrelid = 'identity.conversations'::regclass and a.attname = 'message_count'),
  'jsonb_array_length(messages)', 'message_count is generated as jsonb_array_length(messages)');
select col_default_is('identity', 'conversations', 'messages', '[]'::jsonb,
  'conversations.messages defaults to []');
select col_default_is('identity', 'conversations', 'id', 'gen_random_uuid()',
  'conversations.id defaults to a random UUID (rows inserted by hand without one)');

-- ---------------------------------------------------------------------------------------------
-- identity.events
-- ---------------------------------------------------------------------------------------------
select columns_are('identity', 'events',
  array['id', 'user_id', 'event_type', 'event_data', 'created_at', 'received_at'],
  'events has the expected columns');
select col_type_is('identity', 'events', 'id', 'uuid', 'events.id is uuid');
select col_type_is('identity', 'events', 'user_id', 'text', 'events.user_id is text');
select col_type_is('identity', 'events', 'event_type', 'text', 'events.event_type is text');
select col_type_is('identity', 'events', 'event_data', 'jsonb', 'events.event_data is jsonb');
select col_type_is('identity', 'events', 'created_at', 'timestamp with time zone',
  'events.created_at is timestamptz');
select col_type_is('identity', 'events', 'received_at', 'timestamp with time zone',
  'events.received_at is timestamptz');
select col_is_pk('identity', 'events', 'id', 'events.id is the primary key');
select fk_ok('identity', 'events', 'user_id', 'identity', 'users', 'id',
  'events.user_id references users.id');
select is(
  (select confdeltype::text from pg_catalog.pg_constraint
   where conname = 'events_user_id_fkey' and conrelid = 'identity.events'::regclass),
  'c', 'deleting a user cascades to its events');
select set_eq(
  $$ select attname::text from pg_catalog.pg_attribute
     where attrelid = 'identity.events'::regclass and attnum > 0 and not attisdropped
       and attnotnull $$,
  array['id', 'user_id', 'event_type', 'event_data', 'created_at', 'received_at'],
  'events: every column is NOT NULL');

-- ---------------------------------------------------------------------------------------------
-- Indexes
-- ---------------------------------------------------------------------------------------------
select indexes_are('identity', 'users',
  array['users_pkey', 'users_shop_domain_key', 'users_created_at_idx'],
  'users has exactly its primary key, the shop_domain unique index and created_at');
select indexes_are('identity', 'conversations',
  array['conversations_pkey', 'conversations_user_id_started_at_idx',
        'conversations_source_id_key', 'conversations_started_at_idx',
        'conversations_user_id_search_idx'],
  'conversations has exactly the expected indexes');
select indexes_are('identity', 'events',
  array['events_pkey', 'events_user_id_created_at_idx', 'events_event_type_created_at_idx',
        'events_created_at_idx'],
  'events has exactly the expected indexes');
select is(
  pg_catalog.pg_get_indexdef('identity.conversations_user_id_started_at_idx'::regclass),
  'CREATE INDEX conversations_user_id_started_at_idx ON identity.conversations '
    'USING btree (user_id, started_at DESC, id DESC)',
  'a user''s conversations newest first: index on (user_id, started_at desc, id desc)');
select is(
  pg_catalog.pg_get_indexdef('identity.conversations_source_id_key'::regclass),
  'CREATE UNIQUE INDEX conversations_source_id_key ON identity.conversations '
    'USING btree (source_id) WHERE (source_id IS NOT NULL)',
  'conversations.source_id is unique where present');
select is(
  pg_catalog.pg_get_indexdef('identity.events_user_id_created_at_idx'::regclass),
  'CREATE INDEX events_user_id_created_at_idx ON identity.events '
    'USING btree (user_id, created_at DESC)',
  'a user''s events newest first: index on (user_id, created_at desc)');
select is(
  pg_catalog.pg_get_indexdef('identity.events_event_type_created_at_idx'::regclass),
  'CREATE INDEX events_event_type_created_at_idx ON identity.events '
    'USING btree (event_type, created_at DESC)',
  'events by type: index on (event_type, created_at desc)');
-- Monitoring: newest users, latest conversations and events across everyone
-- (supabase/tests/06-monitoring-plans.sql checks that the planner uses them).
select is(
  pg_catalog.pg_get_indexdef('identity.users_created_at_idx'::regclass),
  'CREATE INDEX users_created_at_idx ON identity.users USING btree (created_at DESC)',
  'newest users first: index on users (created_at desc)');
select is(
  pg_catalog.pg_get_indexdef('identity.conversations_started_at_idx'::regclass),
  'CREATE INDEX conversations_started_at_idx ON identity.conversations '
    'USING btree (started_at DESC)',
  'latest conversations first: index on conversations (started_at desc)');
select is(
  pg_catalog.pg_get_indexdef('identity.events_created_at_idx'::regclass),
  'CREATE INDEX events_created_at_idx ON identity.events USING btree (created_at)',
  'latest events (scanned backwards) and the oldest (archive batches): events (created_at)');
-- Any foreign key (today's or a future one) must be the leading columns of some index.
select is_empty(
  $$ select c.conrelid::regclass::text || '.' || c.conname
     from pg_catalog.pg_constraint as c
     join pg_catalog.pg_namespace as n on n.oid = c.connamespace
     where n.nspname = 'identity' and c.contype = 'f'
       and not exists (
         select 1 from pg_catalog.pg_index as i
         where i.indrelid = c.conrelid
           and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] operator(pg_catalog.@>) c.conkey
           and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] operator(pg_catalog.<@) c.conkey
       ) $$,
  'every foreign key in identity is covered by an index');

-- ---------------------------------------------------------------------------------------------
-- Check constraints, by name and by behaviour
-- ---------------------------------------------------------------------------------------------
select set_eq(
  $$ select conname::text from pg_catalog.pg_constraint
     where conrelid = 'identity.users'::regclass and contype = 'c' $$,
  array['users_id_format', 'users_shop_domain_format', 'users_shopify_id_length',
        'users_email_length', 'users_name_length', 'users_metadata_object'],
  'users has the expected check constraints');
select set_eq(
  $$ select conname::text from pg_catalog.pg_constraint
     where conrelid = 'identity.conversations'::regclass and contype = 'c' $$,
  array['conversations_source_id_length', 'conversations_merchant_id_length',
        'conversations_workflow_name_length', 'conversations_messages_array',
        'conversations_metadata_object'],
  'conversations has the expected check constraints');
select set_eq(
  $$ select conname::text from pg_catalog.pg_constraint
     where conrelid = 'identity.events'::regclass and contype = 'c' $$,
  array['events_event_type_format'],
  'events has the expected check constraints');

select lives_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_0123456789abcdef0123', 'shape-check.myshopify.com') $$,
  'a well-formed user row is accepted');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('user_0123456789abcdef', 'shape-check-2.myshopify.com') $$,
  '23514', null, 'an id not starting with usr_ is refused');
-- usr_ followed by 6 to 46 of [a-z0-9]: the short ids written before this package included.
select lives_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_test123', 'shape-check-short-1.myshopify.com'),
            ('usr_12345678', 'shape-check-short-2.myshopify.com'),
            ('usr_abc123', 'shape-check-short-3.myshopify.com'),
            ('usr_' || repeat('z', 46), 'shape-check-short-4.myshopify.com') $$,
  'ids of 6 to 46 characters after usr_ are accepted (usr_test123, usr_12345678, ...)');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_abc12', 'shape-check-short-5.myshopify.com') $$,
  '23514', null, 'an id of 5 characters after usr_ is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_' || repeat('z', 47), 'shape-check-short-6.myshopify.com') $$,
  '23514', null, 'an id of 47 characters after usr_ is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_Test123', 'shape-check-short-7.myshopify.com') $$,
  '23514', null, 'an id with an upper-case letter is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_test_123', 'shape-check-short-8.myshopify.com') $$,
  '23514', null, 'an id with a character outside [a-z0-9] after usr_ is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_0123456789abcdef9999', 'evil.example.com') $$,
  '23514', null, 'a shop domain outside .myshopify.com is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_0123456789abcdef9998', 'Upper.MyShopify.com') $$,
  '23514', null, 'a non-normalized (upper-case) shop domain is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_0123456789abcdef0123', 'shape-check-3.myshopify.com') $$,
  '23505', null, 'a duplicate user id is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain)
     values ('usr_0123456789abcdef9997', 'shape-check.myshopify.com') $$,
  '23505', null, 'a duplicate shop domain is refused');
select throws_ok(
  $$ insert into identity.users (id, shop_domain, metadata)
     values ('usr_0123456789abcdef9996', 'shape-check-4.myshopify.com', '[]') $$,
  '23514', null, 'users.metadata must be a JSON object');
select throws_ok(
  $$ insert into identity.users (id, shop_domain, email)
     values ('usr_0123456789abcdef9995', 'shape-check-5.myshopify.com', repeat('e', 256)) $$,
  '23514', null, 'users.email is at most 255 characters');

-- The generated message_count is computed before the check runs, so a non-array fails with
-- 22023 (jsonb_array_length of a non-array); either way the row is refused.
select ok(
  tests.sqlstate_of($$ insert into identity.conversations (id, started_at, messages)
                       values (gen_random_uuid(), now(), '{"role":"user"}') $$)
    in ('22023', '23514'),
  'conversations.messages must be a JSON array');
select throws_ok(
  $$ insert into identity.conversations (id, started_at, metadata)
     values (gen_random_uuid(), now(), '"text"') $$,
  '23514', null, 'conversations.metadata must be a JSON object');
select throws_ok(
  $$ insert into identity.conversations (id, started_at, user_id)
     values (gen_random_uuid(), now(), 'usr_ffffffffffffffffffffffff') $$,
  '23503', null, 'a conversation cannot reference a missing user');
select throws_ok(
  $$ insert into identity.conversations (id, started_at, messages, message_count)
     values (gen_random_uuid(), now(), '[]', 5) $$,
  '428C9', null, 'message_count cannot be written');

select throws_ok(
  $$ insert into identity.events (user_id, event_type)
     values ('usr_0123456789abcdef0123', 'Bad Type!') $$,
  '23514', null, 'events.event_type must be a lowercase token');
select throws_ok(
  $$ insert into identity.events (user_id, event_type)
     values ('usr_ffffffffffffffffffffffff', 'login') $$,
  '23503', null, 'an event cannot reference a missing user');

-- ---------------------------------------------------------------------------------------------
-- Behaviour of generated and maintained columns
-- ---------------------------------------------------------------------------------------------
insert into identity.conversations (id, user_id, started_at, messages, updated_at)
values ('c0000000-0000-4000-8000-00000000000c', 'usr_0123456789abcdef0123', now(),
        '[{"role":"user","content":"1"},{"role":"assistant","content":"2"},{"role":"user","content":"3"}]',
        '2000-01-01 00:00+00');
select is(
  (select message_count from identity.conversations
   where id = 'c0000000-0000-4000-8000-00000000000c'),
  3, 'message_count counts the stored messages');
update identity.conversations
  set messages = messages || '[{"role":"assistant","content":"4"}]'::jsonb
  where id = 'c0000000-0000-4000-8000-00000000000c';
select is(
  (select message_count from identity.conversations
   where id = 'c0000000-0000-4000-8000-00000000000c'),
  4, 'message_count follows an update of messages');
select is(
  (select updated_at from identity.conversations
   where id = 'c0000000-0000-4000-8000-00000000000c'),
  now(), 'an UPDATE stamps conversations.updated_at');
update identity.users set updated_at = '2000-01-01 00:00+00'
  where id = 'usr_0123456789abcdef0123';
select is(
  (select updated_at from identity.users where id = 'usr_0123456789abcdef0123'),
  now(), 'an UPDATE stamps users.updated_at (even one that tries to set it)');
select triggers_are('identity', 'users', array['users_set_updated_at'],
  'users has exactly the updated_at trigger');
select triggers_are('identity', 'conversations',
  array['conversations_set_updated_at', 'conversations_search_on_insert',
        'conversations_search_on_update'],
  'conversations has exactly the updated_at and search triggers');
select triggers_are('identity', 'events', array[]::name[], 'events has no triggers');

select * from finish();
rollback;
