-- =============================================================================================
-- Every secondary index serves the query it was made for. The planner is told that scans of
-- whole tables are expensive (enable_seqscan = off), as they are on a production-sized table,
-- and each query runs under EXPLAIN ANALYZE: the plan must name the index. (Running them also
-- counts the scans that Supabase's advisor looks at for its unused_index lint, whatever the
-- size of the test tables and whatever the planner statistics other tests left behind.)
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(5);

create function tests.plan_uses(p_query text, p_index text) returns boolean
  language plpgsql
as $$
declare
  v_plan text;
begin
  execute 'explain (analyze, costs off, format json) ' || p_query into v_plan;
  return v_plan like '%"Index Name": "' || p_index || '"%';
end;
$$;

set local enable_seqscan = off;
select tests.create_fixture_users();

-- The search index (GIN over user_id, search) can also find a user's rows, but only through a
-- bitmap scan and a sort of all of them; on a few rows under a bloated btree (a dev stack after
-- a benchmark deleted its rows) the planner may cost that lower. A history page is an ordered
-- index scan: that is what is asserted. (06-conversation-search.sql proves the search index.)
set local enable_bitmapscan = off;
select ok(tests.plan_uses(
  $$ select id from identity.conversations
     where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' order by started_at desc, id desc limit 20 $$,
  'conversations_user_id_started_at_idx'),
  'a user''s conversations, newest first: conversations_user_id_started_at_idx');
reset enable_bitmapscan;
select ok(tests.plan_uses(
  $$ select id from identity.events
     where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' order by created_at desc limit 50 $$,
  'events_user_id_created_at_idx'),
  'a user''s events, newest first: events_user_id_created_at_idx');
select ok(tests.plan_uses(
  $$ select id from identity.events where event_type = 'login' $$,
  'events_event_type_created_at_idx'),
  'events of one type: events_event_type_created_at_idx');
select ok(tests.plan_uses(
  $$ select id from identity.events
     where created_at < now() - interval '90 days' order by created_at limit 5000 $$,
  'events_created_at_idx'),
  'the oldest events (archive_old_events'' batch): events_created_at_idx');
select ok(tests.plan_uses(
  $$ select id from identity.events_archive
     where user_id = 'usr_aaaaaaaaaaaaaaaaaaaaaaaa' order by created_at desc limit 50 $$,
  'events_archive_user_id_created_at_idx'),
  'a user''s archived events, newest first: events_archive_user_id_created_at_idx');

select * from finish();
rollback;
