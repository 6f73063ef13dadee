-- =============================================================================================
-- Full-text index over each conversation's message contents.
--
-- identity.conversations.search holds the tsvector of every message's `content` (weight A) and
-- the workflow name (weight B, so the contents outrank it), and a GIN index over
-- (user_id, search) answers "this user's conversations matching this query" without visiting
-- other users' postings. The column is written by archive_conversations (once per archived row;
-- see the next migration) and, for any other writer, by the triggers below: every archive,
-- re-archive or direct write leaves it current.
--
-- Parameter: the text-search configuration, default `english`. It is read once, when this
-- migration runs, from the setting `identity.text_search_config`, e.g.
--   PGOPTIONS='-c identity.text_search_config=french' supabase db push
-- and kept in identity.search_config(), which every function below and the search function
-- use. README ("Searching history") says how to change it on a database that already has it.
-- =============================================================================================

-- GIN over a text column (user_id) needs btree_gin's operator classes. Supabase ships it; it
-- lives in the `extensions` schema like every other extension of the project.
create extension if not exists btree_gin with schema extensions;

-- ---------------------------------------------------------------------------------------------
-- identity.search_config(): the migration's parameter, frozen into an immutable function so the
-- index, the archiver and the search all use one configuration.
-- ---------------------------------------------------------------------------------------------
do $migration$
declare
  v_setting text := nullif(btrim(current_setting('identity.text_search_config', true)), '');
  v_config regconfig := coalesce(v_setting, 'english')::regconfig;
  v_name text;
begin
  select pg_catalog.format('%I.%I', n.nspname, c.cfgname)
    into v_name
  from pg_catalog.pg_ts_config as c
  join pg_catalog.pg_namespace as n on n.oid = c.cfgnamespace
  where c.oid = v_config;

  execute pg_catalog.format(
    $sql$
      create function identity.search_config() returns regconfig
        language sql
        immutable
        parallel safe
        security invoker
        set search_path = ''
      as $body$ select %L::regconfig $body$
    $sql$,
    v_name
  );
end;
$migration$;
comment on function identity.search_config() is
  'The text-search configuration of conversation search (set when the search migration ran).';
revoke execute on function identity.search_config() from public;
grant execute on function identity.search_config() to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- identity.conversation_search_vector(messages, workflow_name): the document of one conversation.
-- Every message's `content` (strings anywhere inside it; other fields such as sender and
-- timestamp are not searched), weight A; the workflow name, weight B. Each message is its own
-- string, so a phrase never matches across two messages.
-- ---------------------------------------------------------------------------------------------
create function identity.conversation_search_vector(messages jsonb, workflow_name text)
returns tsvector
  language sql
  immutable
  parallel safe
  security invoker
  set search_path = ''
as $$
  select pg_catalog.setweight(
           pg_catalog.to_tsvector(
             identity.search_config(),
             pg_catalog.jsonb_path_query_array(
               coalesce(conversation_search_vector.messages, '[]'::jsonb), '$[*].content'
             )
           ),
           'A'
         )
      || pg_catalog.setweight(
           pg_catalog.to_tsvector(
             identity.search_config(), coalesce(conversation_search_vector.workflow_name, '')
           ),
           'B'
         );
$$;
comment on function identity.conversation_search_vector(jsonb, text) is
  'Search document of a conversation: message contents (weight A) and workflow name (weight B).';
revoke execute on function identity.conversation_search_vector(jsonb, text) from public;
grant execute on function identity.conversation_search_vector(jsonb, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The column, filled for the rows that exist.
-- ---------------------------------------------------------------------------------------------
alter table identity.conversations add column search tsvector;
comment on column identity.conversations.search is
  'conversation_search_vector(messages, workflow_name): kept current on every write.';

-- Filling an index column is not a change to the conversation: updated_at keeps its value.
alter table identity.conversations disable trigger conversations_set_updated_at;
update identity.conversations as c
   set search = identity.conversation_search_vector(c.messages, c.workflow_name);
alter table identity.conversations enable trigger conversations_set_updated_at;

alter table identity.conversations alter column search set not null;

-- ---------------------------------------------------------------------------------------------
-- Triggers for writers other than archive_conversations (which computes the vector itself, once
-- per row): an INSERT without a vector gets one; an UPDATE that changes the messages or the
-- workflow name without writing a new vector gets it recomputed. A write that supplies the
-- vector (archive_conversations) skips the trigger entirely (its WHEN is false).
-- ---------------------------------------------------------------------------------------------
create function identity.set_conversation_search() returns trigger
  language plpgsql
  security invoker
  set search_path = ''
as $$
begin
  new.search := identity.conversation_search_vector(new.messages, new.workflow_name);
  return new;
end;
$$;
comment on function identity.set_conversation_search() is
  'Trigger function: recomputes conversations.search from the messages and workflow name.';
revoke execute on function identity.set_conversation_search() from public;

create trigger conversations_search_on_insert before insert on identity.conversations
  for each row
  when (new.search is null)
  execute function identity.set_conversation_search();

create trigger conversations_search_on_update
  before update of messages, workflow_name, search on identity.conversations
  for each row
  when (
    new.search is not distinct from old.search
    and (new.messages is distinct from old.messages
         or new.workflow_name is distinct from old.workflow_name)
  )
  execute function identity.set_conversation_search();

comment on trigger conversations_search_on_insert on identity.conversations is
  'Fills search for an inserted row that did not supply it.';
comment on trigger conversations_search_on_update on identity.conversations is
  'Recomputes search when messages or workflow_name change and the writer did not supply it.';

-- ---------------------------------------------------------------------------------------------
-- The index: (user_id, search), so a search walks only its user's postings.
-- ---------------------------------------------------------------------------------------------
create index conversations_user_id_search_idx
  on identity.conversations using gin (user_id, search);
comment on index identity.conversations_user_id_search_idx is
  'Serves search_conversations: one user''s conversations matching a text-search query.';
