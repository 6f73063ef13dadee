-- =============================================================================================
-- archive_conversations: distinct Redis ids are distinct rows.
-- A row is never overwritten by a conversation whose source_id differs. When a conversation's
-- id is already taken by another conversation's row (a literal UUID that equals another id's
-- UUIDv5, or two such ids in one batch), it is stored under a deterministic alternate id with
-- its original id in source_id; readers find it by source_id. The function also returns each
-- input's source_id, so the caller can tell two inputs with one id apart.
-- =============================================================================================

drop function identity.archive_conversations(jsonb);

create function identity.archive_conversations(conversations jsonb)
returns table (id uuid, source_id text, status text, user_id text)
  language sql
  volatile
  security invoker
  set search_path = ''
as $$
  with given as (
    -- One row per conversation: a batch naming a conversation twice keeps its longest copy.
    select distinct on (r.id, r.source_id) r.*
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
    order by r.id, r.source_id, jsonb_array_length(coalesce(r.messages, '[]'::jsonb)) desc
  ),
  ranked as (
    -- Inputs sharing an id in this batch: the canonical one (no source_id) keeps it.
    select g.*, row_number() over (partition by g.id order by g.source_id nulls first) as rank
    from given as g
  ),
  resolved as (
    select r.*,
           coalesce(
             (select c.id from identity.conversations as c
               where c.source_id = coalesce(r.source_id, r.id::text)),
             case
               when r.rank = 1 and not exists (
                 select 1 from identity.conversations as c
                  where c.id = r.id and c.source_id is distinct from r.source_id)
                 then r.id
               else md5('supabase-identity:conversation-alt:'
                        || coalesce(r.source_id, r.id::text))::uuid
             end
           ) as target_id
    from ranked as r
  ),
  input as (
    select r.*,
           case when r.target_id = r.id then r.source_id
                else coalesce(r.source_id, r.id::text) end as target_source,
           r.user_id is not null
             and exists (select 1 from identity.users as u where u.id = r.user_id) as user_known
    from resolved as r
  ),
  upserted as (
    insert into identity.conversations as c (
      id, source_id, user_id, merchant_id, workflow_name, started_at, ended_at, messages,
      metadata, archived_at
    )
    select i.target_id,
           i.target_source,
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
      set user_id = coalesce(excluded.user_id, c.user_id),
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
        and c.source_id is not distinct from excluded.source_id
    returning c.id, (c.xmax = 0) as inserted, c.user_id
  )
  select i.id,
         i.source_id,
         case
           when u.id is not null and u.inserted then 'inserted'
           when u.id is not null then 'updated'
           when stored.source_id is distinct from i.target_source then 'conflict'
           else 'stale'
         end,
         -- A stale row was not touched: report the user it is stored with, so the archiver
         -- does not take a linked conversation for an unlinked one.
         case when u.id is null then stored.user_id else u.user_id end
  from input as i
  left join upserted as u on u.id = i.target_id
  left join identity.conversations as stored on stored.id = i.target_id and u.id is null;
$$;
comment on function identity.archive_conversations(jsonb) is
  'Batch upsert of archived conversations; never overwrites another source_id or a longer copy.';
revoke execute on function identity.archive_conversations(jsonb) from public;
grant execute on function identity.archive_conversations(jsonb) to service_role;
