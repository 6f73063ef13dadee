-- =============================================================================================
-- In-place upgrade: uuid-ossp out of schema public.
--
-- The original identity SQL ran `create extension if not exists "uuid-ossp"`. On Supabase the
-- extension is already installed in schema extensions and that did nothing; on a database
-- without it, it installed it in public, which Supabase's advisor reports (extension_in_public).
-- Only while an upgrade is under way (schema identity_legacy exists, see
-- 20261126195000_set_aside_hand_built_identity_tables.sql) and only when uuid-ossp sits in
-- public, it moves to extensions, as the advisor's remedy says. Its functions keep their oids:
-- column defaults that call them keep working. Nothing else is touched; without the privilege to
-- move it, a warning says how to do it by hand and the upgrade goes on.
-- =============================================================================================

do $$
begin
  if pg_catalog.to_regnamespace('identity_legacy') is null
     or pg_catalog.to_regnamespace('extensions') is null
     or not exists (
       select 1 from pg_catalog.pg_extension
        where extname = 'uuid-ossp' and extnamespace = 'public'::regnamespace
     ) then
    return;
  end if;
  begin
    alter extension "uuid-ossp" set schema extensions;
  exception
    when insufficient_privilege then
      raise warning using
        message = 'extension uuid-ossp is in schema public and this role may not move it',
        hint = 'Run `alter extension "uuid-ossp" set schema extensions` as its owner '
          || '(on Supabase: Dashboard > Database > Extensions).';
  end;
end;
$$;
