-- =============================================================================================
-- Conversation search: the search vector kept current on every write (archive, re-archive,
-- direct insert and update), the GIN index and its use, search_conversations (query syntax,
-- ranking, snippets, total, paging, bad arguments, stop words) and who can find what: anon
-- nothing, a user-scoped token only its own conversations, service_role any user's.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(59);

-- Search results as rows: (position, id, rank, snippet), and the total.
create function tests.hits(p_user_id text, p_query text, p_limit integer default 20,
                           p_skip integer default 0)
returns table (n bigint, id uuid, rank real, snippet text)
  language sql
as $$
  select h.n, (h.item ->> 'id')::uuid, (h.item ->> 'rank')::real, h.item ->> 'snippet'
  from jsonb_array_elements(
         identity.search_conversations(p_user_id, p_query, p_limit, p_skip) -> 'conversations'
       ) with ordinality as h (item, n);
$$;
create function tests.total(p_user_id text, p_query text) returns bigint
  language sql
as $$ select (identity.search_conversations(p_user_id, p_query) ->> 'total')::bigint $$;
create function tests.explain_lines(p_sql text) returns setof text
  language plpgsql
as $$ begin return query execute 'explain ' || p_sql; end; $$;
grant execute on function tests.hits(text, text, integer, integer), tests.total(text, text)
  to anon, authenticated, service_role;

select tests.create_fixture_users();

-- Shop A's searchable history, archived the way the archiver does it.
select tests.authenticate_as_service();
select is(
  (select count(*) from identity.archive_conversations($$[
    {"id": "c0000000-0000-4000-8000-000000000001", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "workflow_name": "support", "started_at": "2026-03-01T10:00:00Z",
     "messages": [{"sender": "user", "content": "Where is my refund? I asked for a refund last week."},
                  {"sender": "cj", "content": "Your refund was issued; refunds take 5 days."}]},
    {"id": "c0000000-0000-4000-8000-000000000002", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "workflow_name": "support", "started_at": "2026-03-02T10:00:00Z",
     "messages": [{"sender": "user", "content": "The order arrived late."},
                  {"sender": "cj", "content": "Sorry about that. A refund is possible."},
                  {"sender": "user", "content": "No thanks, the shipping was fine otherwise."}]},
    {"id": "c0000000-0000-4000-8000-000000000003", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "workflow_name": "refund_requests", "started_at": "2026-03-03T10:00:00Z",
     "messages": [{"sender": "user", "content": "Can you check the stock of blue mugs?"}]},
    {"id": "c0000000-0000-4000-8000-000000000004", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "workflow_name": "support", "started_at": "2026-03-04T10:00:00Z",
     "messages": [{"sender": "user", "content": "What is the refund policy for <b>sale</b> items? 🎉"},
                  {"sender": "cj", "content": "Our policy: refund within 30 days & free returns."}]},
    {"id": "c0000000-0000-4000-8000-000000000005", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "workflow_name": "support", "started_at": "2026-03-05T10:00:00Z",
     "messages": [{"sender": "user", "content": "Please send a policy document."},
                  {"sender": "cj", "content": "Sure. About the refund you asked for: done."}]}
  ]$$::jsonb)),
  5::bigint, 'five conversations archived for shop A');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- The vector and the index
-- ---------------------------------------------------------------------------------------------
select is(
  (select search from identity.conversations where id = 'c0000000-0000-4000-8000-000000000003'),
  '''blue'':7A ''check'':3A ''mug'':8A ''refund'':9B ''request'':10B ''stock'':5A'::tsvector,
  'the vector holds the contents stemmed with weight A and the workflow name with weight B');
select is(identity.search_config(), 'english'::regconfig,
  'the text-search configuration defaults to english');
select is(
  (select search from identity.conversations where id = 'a0000000-0000-4000-8000-000000000001'),
  identity.conversation_search_vector(
    '[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]', 'support'),
  'a row inserted directly (without archive_conversations) gets its vector from the trigger');
select is(
  identity.conversation_search_vector(
    '[{"sender":"user","timestamp":"2026-01-01","content":{"text":"nested words"}}, 7, "x"]',
    null),
  '''nest'':1A ''word'':2A'::tsvector,
  'only message contents are searched (strings nested in a content object too)');
select is(
  identity.conversation_search_vector('[{"content":"refund"},{"content":"policy"}]', null)
    @@ websearch_to_tsquery('english', '"refund policy"'),
  false, 'a phrase never matches across two messages');

select is(
  (select amname::text from pg_catalog.pg_index as i
   join pg_catalog.pg_class as c on c.oid = i.indexrelid
   join pg_catalog.pg_am as a on a.oid = c.relam
   where c.relname = 'conversations_user_id_search_idx'),
  'gin', 'the search index is a GIN index');
select is(
  (select array_agg(a.attname::text order by k.ord)
   from pg_catalog.pg_index as i
   cross join lateral unnest(i.indkey) with ordinality as k (attnum, ord)
   join pg_catalog.pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
   where i.indexrelid = 'identity.conversations_user_id_search_idx'::regclass),
  array['user_id', 'search'], 'the search index covers (user_id, search)');
select is(
  (select n.nspname::text from pg_catalog.pg_extension as e
   join pg_catalog.pg_namespace as n on n.oid = e.extnamespace where e.extname = 'btree_gin'),
  'extensions', 'btree_gin is installed in the extensions schema');

-- A user with a thousand conversations, one of which mentions a rare word: the planner picks
-- the search index over the history index (which would read all thousand). The table is small
-- enough to read whole, so sequential scans are ruled out for the question. (EXPLAIN ANALYZE
-- runs it: the index counts as used, as the advisor's unused_index lint checks.)
insert into identity.conversations (id, user_id, started_at, messages)
select gen_random_uuid(), 'usr_bbbbbbbbbbbbbbbbbbbbbbbb', now() - n * interval '1 minute',
       jsonb_build_array(jsonb_build_object('content', 'ordinary words number ' || n))
from generate_series(1, 1000) as n;
analyze identity.conversations;
set local enable_seqscan = off;
select ok(
  (select string_agg(line, E'\n') from tests.explain_lines(
     $$ analyze select id from identity.conversations
        where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb'
          and search @@ websearch_to_tsquery('english', 'secret') $$) as line)
    like '%conversations_user_id_search_idx%',
  'a user''s search is answered by the search index');
reset enable_seqscan;
delete from identity.conversations
 where user_id = 'usr_bbbbbbbbbbbbbbbbbbbbbbbb' and messages ->> 0 like '%ordinary words%';

-- ---------------------------------------------------------------------------------------------
-- Kept current: re-archive, direct update, link
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as_service();
select is(
  (select status from identity.archive_conversations($$[
    {"id": "c0000000-0000-4000-8000-000000000003", "user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaa",
     "started_at": "2026-03-03T10:00:00Z",
     "messages": [{"sender": "user", "content": "Can you check the stock of blue mugs?"},
                  {"sender": "cj", "content": "We have twelve teapots left as well."}]}
  ]$$::jsonb)),
  'updated', 're-archiving a grown conversation (no workflow name in the batch) updates it');
select is(
  (select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'teapot')),
  'c0000000-0000-4000-8000-000000000003'::uuid,
  'a re-archived conversation is found by its new words');
select ok(
  (select search from identity.conversations where id = 'c0000000-0000-4000-8000-000000000003')
    @@ 'request:B'::tsquery,
  'a re-archive without a workflow name keeps the stored name in the vector');

update identity.conversations
   set messages = '[{"sender":"user","content":"Lighthouse postcards"}]'
 where id = 'c0000000-0000-4000-8000-000000000002';
select is(
  (select count(*) from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'lighthouse')), 1::bigint,
  'a direct update of the messages is found by its new words');
select is(
  (select count(*) from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'shipping')), 0::bigint,
  '... and no longer by the words it lost');
update identity.conversations
   set messages = '[{"sender":"user","content":"The order arrived late."},
                    {"sender":"cj","content":"Sorry about that. A refund is possible."},
                    {"sender":"user","content":"No thanks, the shipping was fine otherwise."}]'
 where id = 'c0000000-0000-4000-8000-000000000002';

select is(
  (select status from identity.archive_conversations($$[
    {"id": "c0000000-0000-4000-8000-000000000009", "user_id": "usr_dddddddddddddddddddddddd",
     "started_at": "2026-03-09T10:00:00Z",
     "messages": [{"sender": "user", "content": "An orphaned umbrella question"}]}
  ]$$::jsonb)),
  'inserted', 'a conversation of a user not yet known is archived unlinked');
insert into identity.users (id, shop_domain)
values ('usr_dddddddddddddddddddddddd', 'tap-shop-d.myshopify.com');
select is(
  (select count(*) from identity.link_conversations(
     '[{"id": "c0000000-0000-4000-8000-000000000009", "user_id": "usr_dddddddddddddddddddddddd"}]')),
  1::bigint, 'linking it later');
select is(
  (select id from tests.hits('usr_dddddddddddddddddddddddd', 'umbrella')),
  'c0000000-0000-4000-8000-000000000009'::uuid,
  'a conversation linked after its archive is found under its user');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Query syntax, ranking, snippets (as the user: RLS applies)
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('usr_aaaaaaaaaaaaaaaaaaaaaaaa');

select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') order by n $$,
  $$ values ('c0000000-0000-4000-8000-000000000001'::uuid),
            ('c0000000-0000-4000-8000-000000000004'::uuid),
            ('c0000000-0000-4000-8000-000000000005'::uuid),
            ('c0000000-0000-4000-8000-000000000002'::uuid),
            ('c0000000-0000-4000-8000-000000000003'::uuid) $$,
  'ranked: four mentions first, the workflow-name-only match last; equal ranks newest first');
select ok(
  (select bool_and(a.rank >= b.rank)
   from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') as a
   join tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') as b on b.n = a.n + 1),
  'ranks never increase down the page');
select cmp_ok(
  (select rank from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') where n = 4), '>',
  (select rank from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') where n = 5),
  'a match in the contents outranks a match in the workflow name only');
select is(tests.total('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund'), 5::bigint,
  'total counts every match');

select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', '"refund policy"') order by n $$,
  $$ values ('c0000000-0000-4000-8000-000000000004'::uuid) $$,
  'a quoted phrase matches the words next to each other only');
select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund -shipping -policy')
     order by id $$,
  $$ values ('c0000000-0000-4000-8000-000000000001'::uuid),
            ('c0000000-0000-4000-8000-000000000003'::uuid) $$,
  '-word excludes the conversations that contain it');
select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'teapot or lighthouse or mugs')
     order by id $$,
  $$ values ('c0000000-0000-4000-8000-000000000003'::uuid) $$,
  'or matches either word');
select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'shipped') $$,
  $$ values ('c0000000-0000-4000-8000-000000000002'::uuid) $$,
  'stemming: "shipped" finds "shipping"');
select is(
  identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'the and of'),
  '{"conversations": [], "total": 0, "limit": 20, "offset": 0}'::jsonb,
  'a query of stop words only returns an empty page, not an error');
select is(
  identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', '!!! ...') -> 'total',
  '0'::jsonb, 'a query of punctuation only returns an empty page');
select is(tests.total('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'zeppelin'), 0::bigint,
  'a word nobody used finds nothing');

select is(
  (select snippet from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', '"refund policy"')),
  'What is the <mark>refund</mark> <mark>policy</mark> for &lt;b&gt;sale&lt;/b&gt; items? 🎉',
  'the snippet marks the matched words and HTML-escapes the rest (emoji kept)');
select is(
  (select snippet from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'issued refund')),
  'Your <mark>refund</mark> was <mark>issued</mark>; <mark>refunds</mark> take 5 days.',
  'the snippet is the message that matches the whole query, not just the first with a word');
select is(
  (select snippet from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'document done')),
  'Please send a policy <mark>document</mark>.',
  'words spread over two messages: the first message with one of them');
select is(
  (select snippet from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'requests')),
  'Can you check the stock of blue mugs?',
  'a workflow-name match: the start of the first message, nothing marked');
select ok(
  (select bool_and(length(snippet) < 400) from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa',
     'refund')),
  'snippets are short');

-- Paging
select results_eq(
  $$ select id from tests.hits('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund', 2, 1) order by n $$,
  $$ values ('c0000000-0000-4000-8000-000000000004'::uuid),
            ('c0000000-0000-4000-8000-000000000005'::uuid) $$,
  'max_results and skip page through the ranked list');
select is(
  identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund', 20, 50),
  '{"conversations": [], "total": 5, "limit": 20, "offset": 50}'::jsonb,
  'a page past the end is empty and still has the total');
select is(
  (select array_agg(k order by k) from jsonb_object_keys(
     identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'mugs') -> 'conversations' -> 0
   ) as k),
  array['ended_at', 'id', 'message_count', 'metadata', 'rank', 'snippet', 'source_id',
        'started_at', 'workflow_name'],
  'each hit has the history list''s fields plus rank and snippet (no messages)');

-- Bad arguments: 22023, naming the argument.
select throws_ok($$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', '') $$,
  '22023', 'query must not be empty', 'an empty query is refused');
select throws_ok($$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', ' 	') $$,
  '22023', 'query must not be empty', 'a blank query is refused');
select throws_ok($$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', null) $$,
  '22023', 'query must not be empty', 'a null query is refused');
select throws_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', repeat('a', 1001)) $$,
  '22023', 'query must be at most 1000 characters', 'an over-long query is refused');
select lives_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', repeat('a ', 500)) $$,
  'a query of exactly 1000 characters is accepted');
select throws_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund', 0) $$,
  '22023', 'max_results must be between 1 and 100', 'max_results 0 is refused');
select throws_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund', 101) $$,
  '22023', 'max_results must be between 1 and 100', 'max_results 101 is refused');
select throws_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund', 20, -1) $$,
  '22023', 'skip must be 0 or more', 'a negative skip is refused');
select throws_ok($$ select identity.search_conversations(null, 'refund') $$,
  '22023', 'user_id must not be null', 'a null user_id is refused');

-- ---------------------------------------------------------------------------------------------
-- Who finds what
-- ---------------------------------------------------------------------------------------------
select is(tests.total('usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'secret'), 0::bigint,
  'a user''s token never finds another user''s conversation (asking for that user)');
select tests.authenticate_as('usr_bbbbbbbbbbbbbbbbbbbbbbbb');
select is(tests.total('usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'secret'), 1::bigint,
  '... while that user finds it');
select is(tests.total('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund'), 0::bigint,
  '... and finds none of the first user''s');
select tests.authenticate_with_claims('{"role": "authenticated", "app_metadata": {}}');
select is(tests.total('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund'), 0::bigint,
  'a token without a user id finds nothing');

select tests.authenticate_as_anon();
select throws_ok(
  $$ select identity.search_conversations('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund') $$,
  '42501', null, 'anon cannot search');

select tests.authenticate_as_service();
select is(tests.total('usr_aaaaaaaaaaaaaaaaaaaaaaaa', 'refund'), 5::bigint,
  'service_role can search any user (A)');
select is(tests.total('usr_bbbbbbbbbbbbbbbbbbbbbbbb', 'secret'), 1::bigint,
  'service_role can search any user (B)');
select tests.clear_authentication();

select function_privs_are('identity', 'search_conversations',
  array['text', 'text', 'integer', 'integer'], 'authenticated', array['EXECUTE'],
  'authenticated can execute search_conversations');
select function_privs_are('identity', 'search_conversations',
  array['text', 'text', 'integer', 'integer'], 'service_role', array['EXECUTE'],
  'service_role can execute search_conversations');
select function_privs_are('identity', 'search_conversations',
  array['text', 'text', 'integer', 'integer'], 'anon', array[]::text[],
  'anon cannot execute search_conversations');
select function_privs_are('identity', 'conversation_search_vector', array['jsonb', 'text'],
  'authenticated', array[]::text[],
  'authenticated cannot execute conversation_search_vector (it writes nothing)');
select function_privs_are('identity', 'conversation_search_vector', array['jsonb', 'text'],
  'service_role', array['EXECUTE'],
  'service_role can execute conversation_search_vector (archive_conversations needs it)');
select is(
  (select provolatile::text from pg_catalog.pg_proc
   where oid = 'identity.search_conversations(text, text, integer, integer)'::regprocedure),
  's', 'search_conversations is STABLE (PostgREST may run it read-only)');

select * from finish();
rollback;
