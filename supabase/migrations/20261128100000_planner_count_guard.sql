-- =============================================================================================
-- Row counts come from rows the caller can see, never from the planner.
--
-- PostgREST answers `Prefer: count=planned` (and `count=estimated` above db-max-rows) with the
-- row estimate of `EXPLAIN (FORMAT JSON) <the count query>`, run as the caller. Row level
-- security filters rows, not statistics: the estimate for `user_id = <another user>` is built
-- from the column's statistics, so a user-scoped token learned how many rows another user has
-- (`*/5003` against `*/1` for an unknown id). No PostgREST setting turns these count modes
-- off, and a pre-request function cannot refuse them reliably: it sees the Prefer headers only
-- through `request.headers`, where a second `Prefer:` header replaces the first while PostgREST
-- honours both.
--
-- So the refusal lives in the planner itself. Every identity table gets a restrictive policy
-- whose only condition is identity_guard.forbid_planner_counts(), a function declared
-- IMMUTABLE on purpose: the planner pre-evaluates immutable calls with constant arguments
-- while it plans, and that is the one moment it runs for an EXPLAIN (which plans but never
-- executes). For an ordinary query it returns true, the condition folds away and costs
-- nothing at execution; while PostgreSQL plans an EXPLAIN it raises 42501 (HTTP 403). Roles
-- that bypass row level security (service_role, the table owner) never evaluate policies,
-- so their counts, planned ones included, stay as they are.
-- =============================================================================================

-- The guard functions run as whichever role PostgREST switched to (any role the project's
-- tokens may name), so this schema and its functions are usable by PUBLIC. It is not exposed
-- through the Data API and holds no data.
create schema if not exists identity_guard;
comment on schema identity_guard is
  'Request and planner guards of supabase-identity: functions only, no data, not exposed.';
revoke all on schema identity_guard from public;
grant usage on schema identity_guard to public;

create function identity_guard.forbid_planner_counts() returns boolean
  language plpgsql
  immutable -- deliberately: see the header of this migration
  security invoker
  set search_path = ''
as $$
begin
  if pg_catalog.current_query() ~* '^\s*explain\M' then
    raise exception using
      errcode = '42501',
      message = 'row estimates of schema identity are not available to this role',
      detail = 'Planned and estimated counts come from table statistics, which include rows '
        'that row level security hides from this role.',
      hint = 'Ask for an exact count (Prefer: count=exact): it counts only the rows you can see.';
  end if;
  return true;
end;
$$;
comment on function identity_guard.forbid_planner_counts() is
  'Restrictive-policy condition: true for queries, raises 42501 while an EXPLAIN is planned '
  '(PostgREST planned/estimated counts), so estimates never reveal rows RLS hides.';
-- Every role RLS applies to evaluates it (PUBLIC, as every function is by default: stated here).
grant execute on function identity_guard.forbid_planner_counts() to public;

-- One restrictive policy per table, for every role (roles that bypass RLS never see it).
create policy "Counts come from visible rows, never from planner estimates"
  on identity.users as restrictive for select to public
  using (identity_guard.forbid_planner_counts());
comment on policy "Counts come from visible rows, never from planner estimates"
  on identity.users is
  'Refuses EXPLAIN (planned/estimated counts) for roles subject to RLS; a no-op for queries.';

create policy "Counts come from visible rows, never from planner estimates"
  on identity.conversations as restrictive for select to public
  using (identity_guard.forbid_planner_counts());
comment on policy "Counts come from visible rows, never from planner estimates"
  on identity.conversations is
  'Refuses EXPLAIN (planned/estimated counts) for roles subject to RLS; a no-op for queries.';

create policy "Counts come from visible rows, never from planner estimates"
  on identity.events as restrictive for select to public
  using (identity_guard.forbid_planner_counts());
comment on policy "Counts come from visible rows, never from planner estimates"
  on identity.events is
  'Refuses EXPLAIN (planned/estimated counts) for roles subject to RLS; a no-op for queries.';
