-- =============================================================================================
-- archive_conversations, now writing conversations.search (previous migration) itself: the
-- vector is computed once per archived row in the INSERT and reused by ON CONFLICT DO UPDATE.
-- Left to the triggers, a re-archive would tokenize twice (BEFORE INSERT fires for the proposed
-- row before the conflict is found, then BEFORE UPDATE). Everything else is as in
-- 20261128120000_archive_distinct_ids.sql (distinct Redis ids are distinct rows; a row is never
-- overwritten by another source_id or by a shorter copy), which this restates in full.
-- =============================================================================================

create or replace function identity.archive_conversations(conversations jsonb)
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
      metadata, archived_at, search
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
           now(),
           -- Tokenizing is most of this function's cost: it happens here, once per row, and
           -- the update below reuses it.
           identity.conversation_search_vector(coalesce(i.messages, '[]'::jsonb), i.workflow_name)
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
          archived_at = now(),
          -- The row keeps its workflow name when the batch has none: only then is the vector
          -- computed again, with that name.
          search = case
                     when excluded.workflow_name is null and c.workflow_name is not null
                       then identity.conversation_search_vector(excluded.messages, c.workflow_name)
                     else excluded.search
                   end
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
  'Batch upsert of archived conversations and their search vectors; never overwrites another '
  'source_id or a longer copy.';
revoke execute on function identity.archive_conversations(jsonb) from public;
grant execute on function identity.archive_conversations(jsonb) to service_role;
