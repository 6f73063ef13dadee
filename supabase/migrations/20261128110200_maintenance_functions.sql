-- =============================================================================================
-- Maintenance, as SQL functions the service role calls over REST (`supabase-identity maintain`)
-- and pg_cron runs on a schedule (next migration). The seed's periodic SQL, made safe:
--
--   archive_old_events             move events older than N days (default 90) to
--                                  identity.events_archive, one bounded batch per call
--   delete_unlinked_conversations  delete conversations still without a user N days (default 7)
--                                  after they were first archived; linked ones are never touched;
--                                  reports what it removed
--   analyze_tables                 ANALYZE the identity tables
--
-- Every call is one short transaction: a batch locks only its own rows (FOR UPDATE SKIP LOCKED,
-- so two runs never wait on each other) and says whether more remain; the caller loops, one
-- transaction per batch, so a large backlog never holds long locks. dry_run reports without
-- changing anything. Bad arguments raise SQLSTATE 22023 naming the parameter.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- A private schema for the one thing the service role may not do itself: ANALYZE needs the
-- table owner. Not exposed over the API (not in [api] schemas); only service_role may use it.
-- ---------------------------------------------------------------------------------------------
create schema if not exists identity_private;
comment on schema identity_private is
  'Internals of supabase-identity that run with the owner''s rights; not exposed over the API.';
revoke all on schema identity_private from public;
grant usage on schema identity_private to service_role;

create function identity_private.analyze_identity_tables()
returns void
  language plpgsql
  volatile
  security definer
  set search_path = ''
as $$
begin
  -- A fixed list, no argument: the owner's rights buy exactly this statement.
  analyze identity.users, identity.conversations, identity.events, identity.events_archive;
end;
$$;
comment on function identity_private.analyze_identity_tables() is
  'ANALYZE of the identity tables with the owner''s rights (PostgreSQL 15 has no MAINTAIN grant).';
revoke execute on function identity_private.analyze_identity_tables() from public;
grant execute on function identity_private.analyze_identity_tables() to service_role;

-- ---------------------------------------------------------------------------------------------
-- Shared argument checks.
-- ---------------------------------------------------------------------------------------------
create function identity_private.check_maintenance_args(older_than_days integer, batch_size integer)
returns void
  language plpgsql
  immutable
  security invoker
  set search_path = ''
as $$
begin
  if older_than_days is null or older_than_days < 1 then
    raise exception 'older_than_days must be a whole number of days, at least 1 (got %)',
      coalesce(older_than_days::text, 'null')
      using errcode = '22023', hint = 'parameter older_than_days, rule: >= 1';
  end if;
  if batch_size is null or batch_size < 1 or batch_size > 50000 then
    raise exception 'batch_size must be between 1 and 50000 (got %)',
      coalesce(batch_size::text, 'null')
      using errcode = '22023', hint = 'parameter batch_size, rule: 1..50000';
  end if;
end;
$$;
comment on function identity_private.check_maintenance_args(integer, integer) is
  'Raises SQLSTATE 22023 naming the parameter when a maintenance argument is out of range.';
revoke execute on function identity_private.check_maintenance_args(integer, integer) from public;
grant execute on function identity_private.check_maintenance_args(integer, integer) to service_role;

-- ---------------------------------------------------------------------------------------------
-- archive_old_events: the oldest batch of events older than the cutoff moves to events_archive
-- in one statement (DELETE … RETURNING feeding INSERT), so an event is in exactly one table at
-- every instant. An id already archived (an event re-delivered after its move) is not archived
-- twice. Returns {cutoff, dry_run, moved, more}; dry_run counts instead ({eligible}).
-- ---------------------------------------------------------------------------------------------
create function identity.archive_old_events(
  older_than_days integer default 90,
  batch_size integer default 5000,
  dry_run boolean default false
)
returns jsonb
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  v_cutoff timestamptz;
  v_moved bigint;
  v_eligible bigint;
begin
  perform identity_private.check_maintenance_args(older_than_days, batch_size);
  v_cutoff := now() - pg_catalog.make_interval(days => older_than_days);
  if dry_run then
    select count(*) into v_eligible from identity.events as e where e.created_at < v_cutoff;
    return pg_catalog.jsonb_build_object(
      'cutoff', v_cutoff, 'dry_run', true, 'moved', 0, 'eligible', v_eligible,
      'more', v_eligible > 0);
  end if;

  with batch as (
    select e.id
    from identity.events as e
    where e.created_at < v_cutoff
    order by e.created_at
    limit batch_size
    for update skip locked
  ),
  moved as (
    delete from identity.events as e
    using batch as b
    where e.id = b.id
    returning e.id, e.user_id, e.event_type, e.event_data, e.created_at, e.received_at
  ),
  archived as (
    insert into identity.events_archive as a
      (id, user_id, event_type, event_data, created_at, received_at)
    select m.id, m.user_id, m.event_type, m.event_data, m.created_at, m.received_at
    from moved as m
    on conflict on constraint events_archive_pkey do nothing
    returning a.id
  )
  select count(*) into v_moved from moved;

  return pg_catalog.jsonb_build_object(
    'cutoff', v_cutoff, 'dry_run', false, 'moved', v_moved,
    'more', exists (select 1 from identity.events as e where e.created_at < v_cutoff));
end;
$$;
comment on function identity.archive_old_events(integer, integer, boolean) is
  'Moves one batch of events older than N days to events_archive; says whether more remain.';
revoke execute on function identity.archive_old_events(integer, integer, boolean) from public;
grant execute on function identity.archive_old_events(integer, integer, boolean) to service_role;

-- ---------------------------------------------------------------------------------------------
-- delete_unlinked_conversations: conversations archived without a user (user_id null, also
-- those waiting in metadata.pending_user_id) whose first archive (created_at) is older than the
-- cutoff. A conversation with a user is never selected. Returns {cutoff, dry_run, deleted, more,
-- conversations: [{id, source_id, merchant_id, pending_user_id, started_at, created_at,
-- message_count}]}: what was removed (dry_run: what would be, this batch, plus {eligible}).
-- ---------------------------------------------------------------------------------------------
create function identity.delete_unlinked_conversations(
  older_than_days integer default 7,
  batch_size integer default 1000,
  dry_run boolean default false
)
returns jsonb
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  v_cutoff timestamptz;
  v_removed jsonb;
  v_eligible bigint;
begin
  perform identity_private.check_maintenance_args(older_than_days, batch_size);
  v_cutoff := now() - pg_catalog.make_interval(days => older_than_days);
  if dry_run then
    select count(*) into v_eligible
    from identity.conversations as c
    where c.user_id is null and c.created_at < v_cutoff;
    select coalesce(pg_catalog.jsonb_agg(r order by r.created_at, r.id), '[]'::jsonb)
      into v_removed
    from (
      select c.id, c.source_id, c.merchant_id, c.metadata ->> 'pending_user_id' as pending_user_id,
             c.started_at, c.created_at, c.message_count
      from identity.conversations as c
      where c.user_id is null and c.created_at < v_cutoff
      order by c.created_at, c.id
      limit batch_size
    ) as r;
    return pg_catalog.jsonb_build_object(
      'cutoff', v_cutoff, 'dry_run', true, 'deleted', 0, 'eligible', v_eligible,
      'more', v_eligible > 0, 'conversations', v_removed);
  end if;

  with batch as (
    select c.id
    from identity.conversations as c
    where c.user_id is null and c.created_at < v_cutoff
    order by c.created_at, c.id
    limit batch_size
    for update skip locked
  ),
  removed as (
    delete from identity.conversations as c
    using batch as b
    -- re-checked on the locked row: a conversation linked meanwhile is kept
    where c.id = b.id and c.user_id is null
    returning c.id, c.source_id, c.merchant_id, c.metadata ->> 'pending_user_id' as pending_user_id,
              c.started_at, c.created_at, c.message_count
  )
  select coalesce(pg_catalog.jsonb_agg(r order by r.created_at, r.id), '[]'::jsonb)
    into v_removed
  from removed as r;

  return pg_catalog.jsonb_build_object(
    'cutoff', v_cutoff, 'dry_run', false, 'deleted', pg_catalog.jsonb_array_length(v_removed),
    'more', exists (select 1 from identity.conversations as c
                    where c.user_id is null and c.created_at < v_cutoff),
    'conversations', v_removed);
end;
$$;
comment on function identity.delete_unlinked_conversations(integer, integer, boolean) is
  'Deletes one batch of conversations unlinked for more than N days; returns what it removed.';
revoke execute on function identity.delete_unlinked_conversations(integer, integer, boolean)
  from public;
grant execute on function identity.delete_unlinked_conversations(integer, integer, boolean)
  to service_role;

-- ---------------------------------------------------------------------------------------------
-- analyze_tables: refresh the planner statistics of the identity tables (the seed's monthly
-- ANALYZE). Returns {dry_run, tables, analyzed_at}.
-- ---------------------------------------------------------------------------------------------
create function identity.analyze_tables(dry_run boolean default false)
returns jsonb
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
begin
  if not dry_run then
    perform identity_private.analyze_identity_tables();
  end if;
  return pg_catalog.jsonb_build_object(
    'dry_run', dry_run,
    'tables', pg_catalog.jsonb_build_array('conversations', 'events', 'events_archive', 'users'),
    'analyzed_at', case when dry_run then null else now() end);
end;
$$;
comment on function identity.analyze_tables(boolean) is
  'ANALYZE identity.users, conversations, events and events_archive (supabase-identity maintain).';
revoke execute on function identity.analyze_tables(boolean) from public;
grant execute on function identity.analyze_tables(boolean) to service_role;
