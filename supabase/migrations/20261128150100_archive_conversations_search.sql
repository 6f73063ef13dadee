-- =============================================================================================
-- archive_conversations, now writing conversations.search (previous migration) itself: the
-- vector is computed once per archived row in the INSERT and reused by ON CONFLICT DO UPDATE.
-- Left to the triggers, a re-archive would tokenize twice (BEFORE INSERT fires for the proposed
-- row before the conflict is found, then BEFORE UPDATE). Everything else is unchanged: see
-- 20261126203000_archive_functions.sql for what the function guarantees.
-- =============================================================================================

create or replace function identity.archive_conversations(conversations jsonb)
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
      metadata, archived_at, search
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
           now(),
           -- Tokenizing is most of this function's cost: it happens here, once per row, and
           -- the update below reuses it.
           identity.conversation_search_vector(coalesce(i.messages, '[]'::jsonb), i.workflow_name)
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
          archived_at = now(),
          -- The row keeps its workflow name when the batch has none: only then is the vector
          -- computed again, with that name.
          search = case
                     when excluded.workflow_name is null and c.workflow_name is not null
                       then identity.conversation_search_vector(excluded.messages, c.workflow_name)
                     else excluded.search
                   end
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
  'Batch upsert of archived conversations (and their search vectors); replaces messages unless the stored copy is longer.';
revoke execute on function identity.archive_conversations(jsonb) from public;
grant execute on function identity.archive_conversations(jsonb) to service_role;
