-- =============================================================================================
-- identity schema: users keyed by Shopify shop domain, archived conversations, analytics events.
--
-- Access model (enforced by grants first, RLS second):
--   anon           nothing at all, not even USAGE on the schema: the anon key is public.
--   authenticated  a user-scoped token carrying the usr_… id in app_metadata.user_id reads its own
--                  user row, conversations and events; it writes nothing.
--   service_role   the backend (bypasses RLS); gets exactly the table privileges the package uses.
-- Supabase no longer grants API roles anything by default, and neither does this file.
-- =============================================================================================

create schema if not exists identity;
comment on schema identity is
  'User identity, archived conversations and analytics events (supabase-identity).';

revoke all on schema identity from public;
grant usage on schema identity to authenticated, service_role;

-- Postgres lets PUBLIC execute every new function, and per-schema default privileges can only
-- add rights, never take that one away: so every function below revokes it explicitly, and
-- supabase/tests/01-security-model.sql fails for any function in this schema that does not.

-- ---------------------------------------------------------------------------------------------
-- updated_at maintenance
-- ---------------------------------------------------------------------------------------------
create function identity.set_updated_at() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;
comment on function identity.set_updated_at() is
  'Trigger function: stamps updated_at on every UPDATE so readers can see when a row last changed.';
revoke execute on function identity.set_updated_at() from public;

-- ---------------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------------
create table identity.users (
  id text primary key
    constraint users_id_format check (id ~ '^usr_[a-z0-9]{16,46}$'),
  shop_domain text not null
    constraint users_shop_domain_key unique
    constraint users_shop_domain_format
      check (shop_domain ~ '^[a-z0-9][a-z0-9-]*\.myshopify\.com$' and length(shop_domain) <= 255),
  shopify_id text constraint users_shopify_id_length check (length(shopify_id) <= 100),
  email text constraint users_email_length check (length(email) <= 255),
  name text constraint users_name_length check (length(name) <= 255),
  metadata jsonb not null default '{}'::jsonb
    constraint users_metadata_object check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  last_seen timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table identity.users enable row level security;

comment on table identity.users is
  'One row per Shopify shop: the stable usr_… id that links conversations and events.';
comment on column identity.users.id is
  'usr_ followed by random lowercase hex; never derived from the shop domain.';
comment on column identity.users.shop_domain is
  'Normalized <name>.myshopify.com domain; the natural key used by get_or_create_user.';
comment on column identity.users.last_seen is 'Last time get_or_create_user saw this shop.';

create trigger users_set_updated_at before update on identity.users
  for each row execute function identity.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- conversations
-- ---------------------------------------------------------------------------------------------
create table identity.conversations (
  id uuid primary key,
  source_id text
    constraint conversations_source_id_length check (length(source_id) <= 512),
  user_id text references identity.users (id) on delete cascade,
  merchant_id text constraint conversations_merchant_id_length check (length(merchant_id) <= 255),
  workflow_name text
    constraint conversations_workflow_name_length check (length(workflow_name) <= 255),
  started_at timestamptz not null,
  ended_at timestamptz,
  messages jsonb not null default '[]'::jsonb
    constraint conversations_messages_array check (jsonb_typeof(messages) = 'array'),
  message_count integer generated always as (jsonb_array_length(messages)) stored,
  metadata jsonb not null default '{}'::jsonb
    constraint conversations_metadata_object check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  archived_at timestamptz not null default now()
);
alter table identity.conversations enable row level security;

comment on table identity.conversations is
  'Conversations archived from Redis before their TTL; messages replaced on every re-archive.';
comment on column identity.conversations.id is
  'The conversation id, or a deterministic UUIDv5 of it when the Redis id was not a UUID.';
comment on column identity.conversations.source_id is
  'The original Redis conversation id when it was not a UUID (null otherwise).';
comment on column identity.conversations.user_id is
  'Owner; null while the archiver has not learned the user (linked later, never dropped).';
comment on column identity.conversations.message_count is
  'jsonb_array_length(messages), stored so lists show counts without transferring messages.';

-- "A user's conversations, newest first" (and keyset pages over it) is one index range scan.
create index conversations_user_id_started_at_idx
  on identity.conversations (user_id, started_at desc, id desc);
create unique index conversations_source_id_key
  on identity.conversations (source_id) where source_id is not null;
comment on index identity.conversations_user_id_started_at_idx is
  'Serves paginated history (offset and keyset) and the user_id foreign key.';

create trigger conversations_set_updated_at before update on identity.conversations
  for each row execute function identity.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- events
-- ---------------------------------------------------------------------------------------------
create table identity.events (
  id uuid primary key default gen_random_uuid(),
  user_id text not null references identity.users (id) on delete cascade,
  event_type text not null
    constraint events_event_type_format check (event_type ~ '^[a-z][a-z0-9_.:-]{0,99}$'),
  event_data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  received_at timestamptz not null default now()
);
alter table identity.events enable row level security;

comment on table identity.events is
  'Analytics events; id is generated by the client so a retried delivery cannot duplicate it.';
comment on column identity.events.created_at is 'When the event happened (set by the client).';
comment on column identity.events.received_at is 'When the database stored it.';

create index events_user_id_created_at_idx on identity.events (user_id, created_at desc);
create index events_event_type_created_at_idx on identity.events (event_type, created_at desc);

-- ---------------------------------------------------------------------------------------------
-- Privileges: explicit, least privilege.
-- ---------------------------------------------------------------------------------------------
revoke all on identity.users, identity.conversations, identity.events
  from public, anon, authenticated, service_role;

grant select on identity.users, identity.conversations, identity.events to authenticated;
grant select, insert, update, delete
  on identity.users, identity.conversations, identity.events to service_role;

-- ---------------------------------------------------------------------------------------------
-- RLS: one policy per command and role. The usr_… id travels in app_metadata (server-written in
-- Supabase Auth, unlike user_metadata). `(select auth.jwt())` is evaluated once per statement.
-- ---------------------------------------------------------------------------------------------
create policy "Users can read their own user row"
  on identity.users for select to authenticated
  using (id = ((select auth.jwt()) -> 'app_metadata' ->> 'user_id'));

create policy "Users can read their own conversations"
  on identity.conversations for select to authenticated
  using (user_id = ((select auth.jwt()) -> 'app_metadata' ->> 'user_id'));

create policy "Users can read their own events"
  on identity.events for select to authenticated
  using (user_id = ((select auth.jwt()) -> 'app_metadata' ->> 'user_id'));
