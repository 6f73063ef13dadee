-- =============================================================================================
-- The planner-count guard (20261128100000) on identity.events_archive too: a user reads its own
-- archived events under RLS, so their planned and estimated counts would otherwise count every
-- user's archived rows, exactly as they did on identity.events.
--
-- Timestamped right after the table's migration (20261128110000), which it needs: the other
-- tables got the guard in 20261128100000. supabase/tests/06-request-guards.sql fails for any
-- identity table readable under RLS that lacks it, so a table added later cannot forget it.
-- =============================================================================================

create policy "Counts come from visible rows, never from planner estimates"
  on identity.events_archive as restrictive for select to public
  using (identity_guard.forbid_planner_counts());
comment on policy "Counts come from visible rows, never from planner estimates"
  on identity.events_archive is
  'Refuses EXPLAIN (planned/estimated counts) for roles subject to RLS; a no-op for queries.';
