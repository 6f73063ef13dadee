-- =============================================================================================
-- In-place upgrade, step 2: copy the rows set aside in identity_legacy into the project's tables
-- and drop identity_legacy (see 20261126195000_set_aside_hand_built_identity_tables.sql, which
-- has already checked that every row fits). Does nothing when identity_legacy does not exist.
--
-- Every row is kept, with its id, owner and timestamps. What the original schema allowed and
-- this one does not is stored without losing anything:
--   users.shop_domain            lower-cased and trimmed, as get_or_create_user looks it up
--   conversations.started_at     null: the earliest of ended_at and created_at (when it was
--                                archived), which the original history API needed and lacked
--   messages                     not an array: wrapped in a one-element array ([] for null)
--   metadata                     not an object: kept under {"legacy_metadata": …} ({} for null)
--   created_at, last_seen        null: the best time known, else now()
-- conversations.archived_at and events.received_at take the original created_at (when the row
-- was stored); updated_at is now(). The original quarterly maintenance copied old events into
-- events_archive without deleting them: an event found in both is stored once, in
-- events_archive (as identity.archive_old_events would move it), with archived_at now().
-- It runs after every other migration of this project up to its timestamp, so the rows meet
-- the current constraints, and is one transaction: either all rows arrive and identity_legacy
-- is gone, or nothing changes and the error names the row (run `supabase db push` again once
-- fixed; the rows wait in identity_legacy, which has no grants and is not exposed).
-- =============================================================================================

do $$
begin
  if pg_catalog.to_regnamespace('identity_legacy') is null then
    return;
  end if;

  -- For this migration only (pg_temp): users' and conversations' metadata.
  create function pg_temp.legacy_metadata(value jsonb) returns jsonb
    language sql
    immutable
    set search_path = ''
  as $function$
    select case
             when pg_catalog.jsonb_typeof(value) = 'object' then value
             when value is null or pg_catalog.jsonb_typeof(value) = 'null' then '{}'::jsonb
             else pg_catalog.jsonb_build_object('legacy_metadata', value)
           end
  $function$;

  insert into identity.users (id, shop_domain, shopify_id, email, name, metadata, created_at,
                              last_seen)
  select u.id::text,
         pg_catalog.lower(pg_catalog.btrim(u.shop_domain::text, E' \t\r\n')),
         u.shopify_id::text,
         u.email::text,
         u.name::text,
         pg_temp.legacy_metadata(u.metadata),
         coalesce(u.created_at, pg_catalog.now()),
         coalesce(u.last_seen, u.created_at, pg_catalog.now())
    from identity_legacy.users as u;

  insert into identity.conversations (id, user_id, merchant_id, workflow_name, started_at,
                                      ended_at, messages, metadata, created_at, archived_at)
  select c.id,
         c.user_id::text,
         c.merchant_id::text,
         c.workflow_name::text,
         coalesce(c.started_at, least(c.ended_at, c.created_at), pg_catalog.now()),
         c.ended_at,
         case
           when pg_catalog.jsonb_typeof(c.messages) = 'array' then c.messages
           when c.messages is null or pg_catalog.jsonb_typeof(c.messages) = 'null'
             then '[]'::jsonb
           else pg_catalog.jsonb_build_array(c.messages)
         end,
         pg_temp.legacy_metadata(c.metadata),
         coalesce(c.created_at, pg_catalog.now()),
         coalesce(c.created_at, pg_catalog.now())
    from identity_legacy.conversations as c;

  insert into identity.events (id, user_id, event_type, event_data, created_at, received_at)
  select e.id,
         e.user_id::text,
         e.event_type::text,
         coalesce(e.event_data, '{}'::jsonb),
         coalesce(e.created_at, pg_catalog.now()),
         coalesce(e.created_at, pg_catalog.now())
    from identity_legacy.events as e;

  if pg_catalog.to_regclass('identity_legacy.events_archive') is not null then
    insert into identity.events_archive (id, user_id, event_type, event_data, created_at,
                                         received_at)
    select a.id,
           a.user_id::text,
           a.event_type::text,
           coalesce(a.event_data, '{}'::jsonb),
           coalesce(a.created_at, pg_catalog.now()),
           coalesce(a.created_at, pg_catalog.now())
      from identity_legacy.events_archive as a;
    delete from identity.events as e
     using identity_legacy.events_archive as a
     where a.id = e.id;
    drop table identity_legacy.events_archive;
  end if;

  -- Without CASCADE: an object of someone else's that still depends on these tables stops the
  -- migration instead of disappearing with them.
  drop table identity_legacy.events, identity_legacy.conversations, identity_legacy.users;
  drop schema identity_legacy;
  drop function pg_temp.legacy_metadata(jsonb);

  analyze identity.users, identity.conversations, identity.events, identity.events_archive;
end;
$$;
