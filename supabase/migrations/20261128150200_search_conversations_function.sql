-- =============================================================================================
-- search_conversations: one user's archived conversations matching a web-search style query,
-- ranked by relevance, each with a short highlighted snippet, and the total: one call, so one
-- HTTP request through PostgREST.
--
-- SECURITY INVOKER: the caller's grants and row-level security decide what can be found. A
-- user-scoped token finds only its own conversations (another user's id gives an empty page),
-- anon cannot call it at all, service_role can search any user.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- conversation_snippet(messages, query): a short excerpt of the first message that matches the
-- query's positive part, matched words wrapped in <mark>…</mark>, everything else HTML-escaped
-- (the snippet is safe to insert into a page as HTML).
--
-- ts_headline parses the text it is given, so it is given one message, never the whole
-- conversation: a cheap substring test on each lexeme's stem skips the messages that cannot
-- match. The first message that matches the whole positive query wins; else (its words are in
-- different messages) the first whose headline marks a word. When none does (a query that only
-- excludes words, or one that matched the workflow name) the snippet is the first 24 words of
-- the first message with content.
-- ---------------------------------------------------------------------------------------------
create function identity.conversation_snippet(messages jsonb, query tsquery)
returns text
  language plpgsql
  immutable
  parallel safe
  security invoker
  set search_path = ''
as $$
declare
  -- The part of the query that names words a message contains (negations removed).
  v_positive tsquery := nullif(pg_catalog.querytree(conversation_snippet.query), 'T')::tsquery;
  v_messages jsonb := case when jsonb_typeof(conversation_snippet.messages) = 'array'
                           then conversation_snippet.messages else '[]'::jsonb end;
  v_prefixes text[];
  v_snippet text;
begin
  -- PL/pgSQL, not SQL: PostgreSQL 15 plans a SQL function's query again on every call (20
  -- calls per search page), PL/pgSQL keeps its plans for the session.
  if v_positive is not null then
    -- Each lexeme minus its last letter: a stem is (nearly always) a prefix of the words it
    -- stands for once its last letter is dropped ("polici" -> "polic" in "policy").
    select coalesce(array_agg(
             case when length(t.lexeme) > 4 then left(t.lexeme, -1) else t.lexeme end
           ), '{}')
      into v_prefixes
    from pg_catalog.regexp_matches(v_positive::text, '''((?:[^'']|'''')+)''', 'g') as m (parts)
    cross join lateral (select replace(m.parts[1], '''''', '''') as lexeme) as t;

    with candidates as materialized (
      -- Messages that contain one of the stems, in order: a substring test, no parsing.
      select m.n,
             replace(replace(replace(replace(
               m.message ->> 'content', '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;')
               as html,
             -- A short message is shown whole; a longer one as its best 10 to 24 words.
             case
               when length(m.message ->> 'content') <= 160
                 then 'StartSel=<mark>, StopSel=</mark>, HighlightAll=true'
               else 'StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=10, ShortWord=2'
             end as options
      from jsonb_array_elements(v_messages) with ordinality as m (message, n)
      where jsonb_typeof(m.message) = 'object'
        and exists (
          select 1 from unnest(v_prefixes) as x (prefix)
          where strpos(lower(m.message ->> 'content'), x.prefix) > 0
        )
    )
    select coalesce(
      -- The first message that matches the whole positive query (a phrase, all its words).
      -- A one-word query needs no such test: any message whose headline marks it will do.
      case when pg_catalog.numnode(v_positive) > 1 then (
        select pg_catalog.ts_headline(identity.search_config(), f.html, v_positive, f.options)
        from (
          select c.html, c.options
          from candidates as c
          where (
                  -- Without "or", a message that matches contains every stem: skip the
                  -- others before parsing.
                  strpos(v_positive::text, '|') > 0
                  or not exists (
                    select 1 from unnest(v_prefixes) as x (prefix)
                    where strpos(lower(c.html), x.prefix) = 0
                  )
                )
            and pg_catalog.to_tsvector(identity.search_config(), c.html) @@ v_positive
          order by c.n
          limit 1
        ) as f
      ) end,
      -- Else (its words are spread over several messages) the first that has one of them.
      -- OFFSET 0 computes each headline once, in message order, until one marks a word.
      (
        select h.headline
        from (
          select pg_catalog.ts_headline(identity.search_config(), c.html, v_positive, c.options)
                   as headline
          from candidates as c
          offset 0
        ) as h
        where strpos(h.headline, '<mark>') > 0
        limit 1
      )
    )
      into v_snippet;
    if v_snippet is not null then
      return v_snippet;
    end if;
  end if;

  -- Nothing to mark (the query only excludes words, or matched the workflow name): the first
  -- 24 words of the first message with content.
  return (
    select substring(
             replace(replace(replace(replace(
               m.message ->> 'content', '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;')
             from '^\s*((?:\S+\s+){0,23}\S+)'
           )
    from jsonb_array_elements(v_messages) with ordinality as m (message, n)
    where jsonb_typeof(m.message) = 'object'
      and (m.message ->> 'content') ~ '\S'
    order by m.n
    limit 1
  );
end;
$$;
comment on function identity.conversation_snippet(jsonb, tsquery) is
  'Short HTML-escaped excerpt of the first message matching a query, matches in <mark> tags.';
revoke execute on function identity.conversation_snippet(jsonb, tsquery) from public;
grant execute on function identity.conversation_snippet(jsonb, tsquery) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- search_conversations(user_id, query, max_results, skip)
--
-- query: websearch_to_tsquery syntax ("quoted phrase", -excluded, or), 1..1000 characters, at
-- least one non-space; a query of stop words only (such as "the") finds nothing and returns an
-- empty page, not an error. max_results: 1..100. skip: >= 0. Bad arguments raise SQLSTATE
-- 22023 naming the argument (PostgREST answers 400).
--
-- Returns {"conversations": [...], "total": n, "limit": max_results, "offset": skip}: the
-- conversations are the history list's fields (id, source_id, workflow_name, started_at,
-- ended_at, message_count, metadata) plus rank (ts_rank, contents weighted over the workflow
-- name, normalized by document length) and snippet; most relevant first, ties newest first.
-- total counts every match the caller can see. Only the page's rows are read in full and
-- given a snippet.
-- ---------------------------------------------------------------------------------------------
create function identity.search_conversations(
  user_id text,
  query text,
  max_results integer default 20,
  skip integer default 0
)
returns jsonb
  language plpgsql
  stable
  security invoker
  set search_path = ''
as $$
declare
  v_query tsquery;
begin
  if search_conversations.user_id is null then
    raise exception using errcode = '22023', message = 'user_id must not be null';
  end if;
  if search_conversations.query is null or search_conversations.query !~ '\S' then
    raise exception using errcode = '22023', message = 'query must not be empty';
  end if;
  if length(search_conversations.query) > 1000 then
    raise exception using errcode = '22023', message = 'query must be at most 1000 characters';
  end if;
  if search_conversations.max_results is null
     or search_conversations.max_results not between 1 and 100 then
    raise exception using errcode = '22023', message = 'max_results must be between 1 and 100';
  end if;
  if search_conversations.skip is null or search_conversations.skip < 0 then
    raise exception using errcode = '22023', message = 'skip must be 0 or more';
  end if;

  v_query := pg_catalog.websearch_to_tsquery(identity.search_config(), search_conversations.query);
  if pg_catalog.numnode(v_query) = 0 then
    -- Only stop words (or no words at all, e.g. punctuation): nothing can match.
    return jsonb_build_object(
      'conversations', '[]'::jsonb, 'total', 0,
      'limit', search_conversations.max_results, 'offset', search_conversations.skip
    );
  end if;

  return (
    with matches as materialized (
      select c.id, c.started_at, pg_catalog.ts_rank(c.search, v_query, 1) as rank
      from identity.conversations as c
      where c.user_id = search_conversations.user_id
        and c.search @@ v_query
    ),
    page as (
      select m.id, m.rank
      from matches as m
      order by m.rank desc, m.started_at desc, m.id desc
      limit search_conversations.max_results
      offset search_conversations.skip
    )
    select jsonb_build_object(
      'conversations', coalesce(
        jsonb_agg(
          jsonb_build_object(
            'id', c.id,
            'source_id', c.source_id,
            'workflow_name', c.workflow_name,
            'started_at', c.started_at,
            'ended_at', c.ended_at,
            'message_count', c.message_count,
            'metadata', c.metadata,
            'rank', p.rank,
            'snippet', identity.conversation_snippet(c.messages, v_query)
          )
          order by p.rank desc, c.started_at desc, c.id desc
        ),
        '[]'::jsonb
      ),
      'total', (select count(*) from matches),
      'limit', search_conversations.max_results,
      'offset', search_conversations.skip
    )
    from page as p
    join identity.conversations as c on c.id = p.id
  );
end;
$$;
comment on function identity.search_conversations(text, text, integer, integer) is
  'Full-text search of one user''s conversations (RLS applies): ranked page, snippets, total.';
revoke execute on function identity.search_conversations(text, text, integer, integer) from public;
grant execute on function identity.search_conversations(text, text, integer, integer)
  to authenticated, service_role;
