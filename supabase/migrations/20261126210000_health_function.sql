-- =============================================================================================
-- health: what `supabase-identity doctor` needs to know about the schema in one call, without
-- a database connection: every table with its RLS flag, and the functions that exist.
-- Catalog reads only; service_role only.
-- =============================================================================================
create function identity.health()
returns jsonb
  language sql
  stable
  security invoker
  set search_path = ''
as $$
  select jsonb_build_object(
    'tables', coalesce((
      select jsonb_agg(jsonb_build_object('name', c.relname, 'rls', c.relrowsecurity)
                       order by c.relname)
      from pg_catalog.pg_class as c
      where c.relnamespace = 'identity'::regnamespace and c.relkind in ('r', 'p')
    ), '[]'::jsonb),
    'functions', coalesce((
      select jsonb_agg(distinct p.proname order by p.proname)
      from pg_catalog.pg_proc as p
      where p.pronamespace = 'identity'::regnamespace
    ), '[]'::jsonb)
  );
$$;
comment on function identity.health() is
  'Tables with their RLS flag and the functions present in schema identity (for doctor).';
revoke execute on function identity.health() from public;
grant execute on function identity.health() to service_role;
