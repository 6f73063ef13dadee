-- =============================================================================================
-- Schedule the maintenance functions with pg_cron, where the server has it.
--
-- Supabase ships pg_cron preloaded (this is how its dashboard enables it); the local stack
-- installs Debian's postgresql-15-cron and preloads it (scripts/stack). Anywhere else this
-- migration changes nothing and says so: pg_cron must be installed, preloaded
-- (shared_preload_libraries, which defines cron.database_name) and bound to this database.
-- Idempotent: jobs are named, and cron.schedule() with an existing name updates that job.
--
-- Jobs run as the role that applied this migration (the tables' owner), in UTC:
--   identity-archive-old-events           daily 03:10   events older than 90 days, batch by batch
--   identity-delete-unlinked-conversations Sundays 03:20 conversations unlinked for 7 days
--   identity-analyze                      monthly, 1st 03:30
-- The seed moved events quarterly; daily moves the same events in small, regular runs. Each
-- batch commits on its own (a DO block run at top level may COMMIT), so a backlog never holds
-- long locks; a batch that could take nothing (rows locked by a concurrent run) ends the loop.
-- Without pg_cron, run `supabase-identity maintain` from any scheduler.
-- =============================================================================================

do $migration$
declare
  v_database text := pg_catalog.current_setting('cron.database_name', true);
begin
  if not exists (select 1 from pg_catalog.pg_available_extensions where name = 'pg_cron') then
    raise notice 'pg_cron is not installed: identity maintenance is not scheduled '
      '(run `supabase-identity maintain` from a scheduler instead)';
    return;
  end if;
  if v_database is null then
    raise notice 'pg_cron is installed but not preloaded (shared_preload_libraries): identity '
      'maintenance is not scheduled';
    return;
  end if;
  if v_database <> pg_catalog.current_database() then
    raise notice 'pg_cron runs in database %, not %: identity maintenance is not scheduled',
      v_database, pg_catalog.current_database();
    return;
  end if;

  create extension if not exists pg_cron with schema pg_catalog;

  perform cron.schedule(
    'identity-archive-old-events',
    '10 3 * * *',
    $job$do $$ declare r jsonb; begin loop r := identity.archive_old_events(); exit when (r ->> 'moved')::bigint = 0 or not (r ->> 'more')::boolean; commit; end loop; end $$ $job$
  );
  perform cron.schedule(
    'identity-delete-unlinked-conversations',
    '20 3 * * 0',
    $job$do $$ declare r jsonb; begin loop r := identity.delete_unlinked_conversations(); exit when (r ->> 'deleted')::bigint = 0 or not (r ->> 'more')::boolean; commit; end loop; end $$ $job$
  );
  perform cron.schedule('identity-analyze', '30 3 1 * *', $job$select identity.analyze_tables()$job$);
end;
$migration$;
