-- =============================================================================================
-- The monitoring queries (newest users, latest conversations, latest events across everyone)
-- read a few index entries instead of sorting a whole table. With a few thousand rows inserted
-- in this transaction the planner's real choice is asserted: a scan of the named index, no Sort
-- node and no table read whole (without those indexes each plan is a sequential scan and a sort
-- of the whole table). Then each query runs and returns the newest rows (dated in 2100: the
-- newest whatever else the database holds). No ANALYZE: it would leave its row counts in
-- pg_class after the rollback; the planner sizes the tables from their files.
-- =============================================================================================
begin;
\ir _helpers.psql

select plan(12);

create function tests.plan_of(p_query text) returns jsonb
  language plpgsql
as $$
declare
  v_plan jsonb;
begin
  execute 'explain (format json) ' || p_query into v_plan;
  return v_plan -> 0 -> 'Plan';
end;
$$;

insert into identity.users (id, shop_domain, created_at)
select 'usr_plan' || lpad(g::text, 8, '0'), 'plan-check-' || g || '.myshopify.com',
       '2100-01-01 00:00+00'::timestamptz + g * interval '1 minute'
from generate_series(1, 5000) as g;

insert into identity.conversations (user_id, started_at, workflow_name, messages)
select 'usr_plan' || lpad((g % 500 + 1)::text, 8, '0'),
       '2100-01-01 00:00+00'::timestamptz + g * interval '1 minute', 'support', '[]'
from generate_series(1, 5000) as g;

insert into identity.events (user_id, event_type, created_at)
select 'usr_plan' || lpad((g % 500 + 1)::text, 8, '0'), 'plan.check',
       '2100-01-01 00:00+00'::timestamptz + g * interval '1 second'
from generate_series(1, 20000) as g;

create temporary table cases (name text primary key, index text, query text, plan jsonb)
  on commit drop;
insert into cases (name, index, query) values
  ('newest users', 'users_created_at_idx',
   'SELECT * FROM identity.users ORDER BY created_at DESC LIMIT 5'),
  ('latest conversations', 'conversations_started_at_idx',
   'SELECT id, user_id, workflow_name, started_at FROM identity.conversations '
   'ORDER BY started_at DESC LIMIT 5'),
  ('latest events', 'events_created_at_idx',
   'SELECT user_id, event_type, created_at FROM identity.events '
   'ORDER BY created_at DESC LIMIT 10');
update cases set plan = tests.plan_of(query);

select is(jsonb_path_query_array(plan, 'strict $.**."Index Name"'), jsonb_build_array(index),
          name || ': scans ' || index || ' only')
  from cases order by name;
select ok(not jsonb_path_exists(plan, 'strict $.** ? (@."Node Type" == "Sort")'),
          name || ': nothing is sorted')
  from cases order by name;
select ok(not jsonb_path_exists(plan, 'strict $.** ? (@."Node Type" == "Seq Scan")'),
          name || ': no table is read whole')
  from cases order by name;

-- The queries run, and return what they are for.
select results_eq(
  $$ select q.id from (SELECT * FROM identity.users ORDER BY created_at DESC LIMIT 5) as q $$,
  $$ values ('usr_plan00005000'), ('usr_plan00004999'), ('usr_plan00004998'),
            ('usr_plan00004997'), ('usr_plan00004996') $$,
  'newest users: the five created last, newest first');
select results_eq(
  $$ select q.started_at from (SELECT id, user_id, workflow_name, started_at
                              FROM identity.conversations ORDER BY started_at DESC LIMIT 5) as q $$,
  $$ select '2100-01-01 00:00+00'::timestamptz + g * interval '1 minute'
     from generate_series(5000, 4996, -1) as g $$,
  'latest conversations: the five started last, newest first');
select results_eq(
  $$ select q.created_at from (SELECT user_id, event_type, created_at
                               FROM identity.events ORDER BY created_at DESC LIMIT 10) as q $$,
  $$ select '2100-01-01 00:00+00'::timestamptz + g * interval '1 second'
     from generate_series(20000, 19991, -1) as g $$,
  'latest events: the ten created last, newest first');
select * from finish();
rollback;
