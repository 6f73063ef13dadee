-- =============================================================================================
-- Archiver write path: batch upsert of conversations and late linking to users.
-- The archiver (supabase_identity.archive) calls these through PostgREST with the service key.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- archive_conversations: one statement per batch. A re-archive replaces the messages (the seed's
-- ON CONFLICT DO NOTHING lost every message written after the first archive), but never with an
-- older, shorter copy: a slow archiver that lost its lease cannot undo a newer archive. A user id
-- that is not (yet) a user is kept in metadata.pending_user_id instead of failing the batch on
-- the foreign key; an already linked row is never unlinked.
-- Returns one row per input: status inserted | updated | stale, and the row's user_id after it
-- (for stale rows, the stored one).
-- ---------------------------------------------------------------------------------------------
create function identity.archive_conversations(conversations jsonb)
returns table (id uuid, status text, user_id text)
  language sql
  volatile
  security invoker
  set search_path = ''
as $$
  with input as (
    -- One row per id: a batch naming a conversation twice keeps its longest copy (ON CONFLICT
    -- cannot touch a row twice in one statement).
    select distinct on (r.id) r.*,
           r.user_id is not null
             and exists (select 1 from identity.users as u where u.id = r.user_id) as user_known
    from jsonb_to_recordset(archive_conversations.conversations) as r (
      id uuid,
      source_id text,
      user_id text,
      merchant_id text,
      workflow_name text,
      started_at timestamptz,
      ended_at timestamptz,
      messages jsonb,
      metadata jsonb
    )
    order by r.id, jsonb_array_length(coalesce(r.messages, '[]'::jsonb)) desc
  ),
  upserted as (
    insert into identity.conversations as c (
      id, source_id, user_id, merchant_id, workflow_name, started_at, ended_at, messages,
      metadata, archived_at
    )
    select i.id,
           i.source_id,
           case when i.user_known then i.user_id end,
           i.merchant_id,
           i.workflow_name,
           coalesce(i.started_at, now()),
           i.ended_at,
           coalesce(i.messages, '[]'::jsonb),
           coalesce(i.metadata, '{}'::jsonb)
             || case
                  when i.user_id is not null and not i.user_known
                    then jsonb_build_object('pending_user_id', i.user_id)
                  else '{}'::jsonb
                end,
           now()
    from input as i
    on conflict on constraint conversations_pkey do update
      set source_id = coalesce(excluded.source_id, c.source_id),
          user_id = coalesce(excluded.user_id, c.user_id),
          merchant_id = coalesce(excluded.merchant_id, c.merchant_id),
          workflow_name = coalesce(excluded.workflow_name, c.workflow_name),
          started_at = excluded.started_at,
          ended_at = coalesce(excluded.ended_at, c.ended_at),
          messages = excluded.messages,
          metadata = case
                       when excluded.user_id is not null or c.user_id is not null
                         then (c.metadata || excluded.metadata) - 'pending_user_id'
                       else c.metadata || excluded.metadata
                     end,
          archived_at = now()
      where jsonb_array_length(excluded.messages) >= c.message_count
    returning c.id, (c.xmax = 0) as inserted, c.user_id
  )
  select i.id,
         case
           when u.id is null then 'stale'
           when u.inserted then 'inserted'
           else 'updated'
         end,
         -- A stale row was not touched: report the user it is stored with, so the archiver
         -- does not take a linked conversation for an unlinked one.
         case when u.id is null then stored.user_id else u.user_id end
  from input as i
  left join upserted as u on u.id = i.id
  left join identity.conversations as stored on stored.id = i.id and u.id is null;
$$;
comment on function identity.archive_conversations(jsonb) is
  'Batch upsert of archived conversations; replaces messages unless the stored copy is longer.';
revoke execute on function identity.archive_conversations(jsonb) from public;
grant execute on function identity.archive_conversations(jsonb) to service_role;

-- ---------------------------------------------------------------------------------------------
-- link_conversations: attach conversations archived without a known user once the user exists.
-- Only rows still unlinked are changed. Returns every given conversation that is linked after
-- the call — just now, or already before (by an earlier pass or another archiver) — so the
-- caller can stop tracking all of them.
-- ---------------------------------------------------------------------------------------------
create function identity.link_conversations(links jsonb)
returns table (id uuid, user_id text)
  language sql
  volatile
  security invoker
  set search_path = ''
as $$
  with wanted as (
    select l.id, l.user_id
    from jsonb_to_recordset(link_conversations.links) as l (id uuid, user_id text)
  ),
  linked as (
    update identity.conversations as c
       set user_id = w.user_id,
           metadata = c.metadata - 'pending_user_id'
      from wanted as w
     where c.id = w.id
       and c.user_id is null
       and exists (select 1 from identity.users as u where u.id = w.user_id)
    returning c.id, c.user_id
  )
  select linked.id, linked.user_id from linked
  union all
  select c.id, c.user_id
  from identity.conversations as c
  join wanted as w on w.id = c.id
  where c.user_id is not null;
$$;
comment on function identity.link_conversations(jsonb) is
  'Sets user_id on archived conversations that were stored unlinked; ignores linked rows.';
revoke execute on function identity.link_conversations(jsonb) from public;
grant execute on function identity.link_conversations(jsonb) to service_role;
