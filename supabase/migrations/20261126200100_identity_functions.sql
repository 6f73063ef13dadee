-- =============================================================================================
-- SQL functions behind the SDK's one-round-trip operations. All are SECURITY INVOKER with an
-- empty search_path: they run with the caller's privileges and RLS, and name every object.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- get_or_create_user: one statement, race-free. INSERT … ON CONFLICT serializes concurrent calls
-- for one shop on the unique index: exactly one caller inserts (xmax = 0 on the returned row),
-- every other caller takes the update branch. Returning users get last_seen bumped and keep
-- their old email/name/shopify_id unless a new non-empty value is given.
-- ---------------------------------------------------------------------------------------------
create function identity.get_or_create_user(
  shop_domain text,
  email text default null,
  name text default null,
  shopify_id text default null
)
returns table (user_id text, is_new boolean)
  language sql
  volatile
  security invoker
  set search_path = ''
as $$
  insert into identity.users as u (id, shop_domain, email, name, shopify_id)
  values (
    'usr_' || encode(extensions.gen_random_bytes(12), 'hex'),
    lower(btrim(get_or_create_user.shop_domain, E' \t\r\n')),
    nullif(btrim(get_or_create_user.email), ''),
    nullif(btrim(get_or_create_user.name), ''),
    nullif(btrim(get_or_create_user.shopify_id), '')
  )
  on conflict (shop_domain) do update
    set last_seen = now(),
        email = coalesce(excluded.email, u.email),
        name = coalesce(excluded.name, u.name),
        shopify_id = coalesce(excluded.shopify_id, u.shopify_id)
  returning u.id, (u.xmax = 0);
$$;
comment on function identity.get_or_create_user(text, text, text, text) is
  'Returns (user_id, is_new) for a shop domain, creating the user on first sight; race-free.';
revoke execute on function identity.get_or_create_user(text, text, text, text) from public;
grant execute on function identity.get_or_create_user(text, text, text, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- get_user_profile: the user row plus conversation and event stats in one call. Runs as the
-- caller, so a user-scoped token sees only its own profile (null for anyone else's).
-- ---------------------------------------------------------------------------------------------
create function identity.get_user_profile(user_id text)
returns jsonb
  language sql
  stable
  security invoker
  set search_path = ''
as $$
  select jsonb_build_object(
    'user_id', u.id,
    'shop_domain', u.shop_domain,
    'shopify_id', u.shopify_id,
    'email', u.email,
    'name', u.name,
    'metadata', u.metadata,
    'created_at', u.created_at,
    'last_seen', u.last_seen,
    'stats', jsonb_build_object(
      'total_conversations', c.total_conversations,
      'total_messages', c.total_messages,
      'first_conversation', c.first_conversation,
      'last_conversation', c.last_conversation,
      'total_events', e.total_events
    )
  )
  from identity.users as u
  cross join lateral (
    select count(*) as total_conversations,
           coalesce(sum(conv.message_count), 0) as total_messages,
           min(conv.started_at) as first_conversation,
           max(conv.started_at) as last_conversation
    from identity.conversations as conv
    where conv.user_id = u.id
  ) as c
  cross join lateral (
    select count(*) as total_events from identity.events as ev where ev.user_id = u.id
  ) as e
  where u.id = get_user_profile.user_id;
$$;
comment on function identity.get_user_profile(text) is
  'Profile with conversation/event stats for one user; null when absent or not visible.';
revoke execute on function identity.get_user_profile(text) from public;
grant execute on function identity.get_user_profile(text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- record_events: idempotent batch insert keyed by the client-generated event id. Reports, per
-- event, whether it was inserted, already there (a retried delivery), or refers to a user that
-- does not exist (a permanent failure the client keeps in its dead-letter list).
-- ---------------------------------------------------------------------------------------------
create function identity.record_events(events jsonb)
returns table (id uuid, status text)
  language sql
  volatile
  security invoker
  set search_path = ''
as $$
  with input as (
    select r.id, r.user_id, r.event_type, r.event_data, r.created_at, r.n,
           -- the first copy of an id in the batch is the one inserted; later copies are duplicates
           r.n = min(r.n) over (partition by r.id) as first_copy,
           exists (select 1 from identity.users as u where u.id = r.user_id) as user_exists
    from rows from (
      jsonb_to_recordset(record_events.events)
        as (id uuid, user_id text, event_type text, event_data jsonb, created_at timestamptz)
    ) with ordinality as r (id, user_id, event_type, event_data, created_at, n)
  ),
  inserted as (
    insert into identity.events as ev (id, user_id, event_type, event_data, created_at)
    select i.id, i.user_id, i.event_type, coalesce(i.event_data, '{}'::jsonb),
           coalesce(i.created_at, now())
    from input as i
    where i.user_exists and i.first_copy
    on conflict on constraint events_pkey do nothing
    returning ev.id
  )
  select i.id,
         case
           when ins.id is not null and i.first_copy then 'inserted'
           when not i.user_exists then 'unknown_user'
           else 'duplicate'
         end
  from input as i
  left join inserted as ins on ins.id = i.id
  order by i.n;
$$;
comment on function identity.record_events(jsonb) is
  'Inserts a batch of events once each (by id); returns inserted/duplicate/unknown_user per id.';
revoke execute on function identity.record_events(jsonb) from public;
grant execute on function identity.record_events(jsonb) to service_role;
