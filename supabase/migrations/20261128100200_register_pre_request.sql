-- =============================================================================================
-- Register identity_guard.check_request as PostgREST's pre-request function, without ever
-- replacing one the project already has.
--
-- Supabase documents the in-database setting (Securing your API → "Enforce additional rules on
-- each request"): `alter role authenticator set pgrst.db_pre_request = …` followed by
-- `notify pgrst, 'reload config'`; `supabase start` and scripts/stack read it the same way
-- (PostgREST's db-config is on by default). PostgREST takes, in order: the setting for the
-- role in this database, the role-wide setting, then whatever a db-pre-config function sets.
--
-- A project has one pre-request function. If it already has another, this refuses and says
-- how to chain the two; once that function calls identity_guard.check_request, running the
-- migration again (`supabase db push`) accepts it and changes nothing.
-- =============================================================================================

create function identity_guard.source_of(function_name text) returns text
  language sql
  stable
  security invoker
  set search_path = ''
as $$
  -- A setting names a function as PostgREST does: `schema.name`, or `name` alone.
  select pg_catalog.string_agg(p.prosrc, e'\n')
  from pg_catalog.pg_proc as p
  join pg_catalog.pg_namespace as n on n.oid = p.pronamespace,
  lateral (select pg_catalog.parse_ident(source_of.function_name) as parts) as ident
  where p.proname = ident.parts[pg_catalog.cardinality(ident.parts)]
    and (pg_catalog.cardinality(ident.parts) = 1 or n.nspname = ident.parts[1]);
$$;
comment on function identity_guard.source_of(text) is
  'Source text of the function(s) a PostgREST setting names, for install_pre_request.';
revoke execute on function identity_guard.source_of(text) from public;

create function identity_guard.install_pre_request() returns text
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  ours constant text := 'identity_guard.check_request';
  entry_prefix constant text := 'pgrst.db_pre_request=';
  this_database oid := (select d.oid from pg_catalog.pg_database as d
                        where d.datname = pg_catalog.current_database());
  in_database text;   -- ALTER ROLE authenticator IN DATABASE … SET (wins when present)
  role_wide text;     -- ALTER ROLE authenticator SET
  effective text;
  pre_config text;
  pre_config_source text;
  how_to_chain constant text :=
    'Call it from your function, passing the search_path PostgREST set for the request: '
    'add a parameter `request_search_path text default pg_catalog.current_setting(''search_path'')` '
    'and `perform identity_guard.check_request(request_search_path);`, then run the migrations '
    'again. Or unset yours (`alter role authenticator reset pgrst.db_pre_request`) to let '
    'supabase-identity install its own.';
begin
  if pg_catalog.to_regrole('authenticator') is null then
    raise notice 'no role authenticator (not a Supabase database): no PostgREST to configure';
    return 'skipped: no authenticator role';
  end if;

  select pg_catalog.substr(setting, pg_catalog.length(entry_prefix) + 1)
    into in_database
    from pg_catalog.pg_db_role_setting as s, pg_catalog.unnest(s.setconfig) as setting
   where s.setrole = 'authenticator'::regrole and s.setdatabase = this_database
     and pg_catalog.starts_with(setting, entry_prefix);
  select pg_catalog.substr(setting, pg_catalog.length(entry_prefix) + 1)
    into role_wide
    from pg_catalog.pg_db_role_setting as s, pg_catalog.unnest(s.setconfig) as setting
   where s.setrole = 'authenticator'::regrole and s.setdatabase = 0
     and pg_catalog.starts_with(setting, entry_prefix);
  effective := coalesce(in_database, role_wide);

  if effective = ours then
    return 'unchanged: already registered';
  end if;

  if nullif(effective, '') is not null then
    -- Someone else's function: accept it only when it already calls ours.
    if identity_guard.source_of(effective) like '%identity_guard.check_request%' then
      return 'unchanged: ' || effective || ' already calls ' || ours;
    end if;
    raise exception using
      errcode = '55000',
      message = pg_catalog.format(
        'PostgREST already runs the pre-request function %s; supabase-identity will not '
        'replace it', effective),
      hint = how_to_chain;
  end if;

  -- A db-pre-config function may set a pre-request function that ours would silently override.
  select pg_catalog.substr(setting, pg_catalog.length('pgrst.db_pre_config=') + 1)
    into pre_config
    from pg_catalog.pg_db_role_setting as s, pg_catalog.unnest(s.setconfig) as setting
   where s.setrole = 'authenticator'::regrole and s.setdatabase in (0, this_database)
     and pg_catalog.starts_with(setting, 'pgrst.db_pre_config=')
   order by s.setdatabase desc
   limit 1;
  pre_config_source := identity_guard.source_of(nullif(pre_config, ''));
  if pre_config_source like '%db_pre_request%'
     and pre_config_source not like '%identity_guard.check_request%' then
    raise exception using
      errcode = '55000',
      message = pg_catalog.format(
        'the db-pre-config function %s sets a pre-request function; supabase-identity will '
        'not override it', pre_config),
      hint = 'Make the pre-request function it sets call identity_guard.check_request. '
        || how_to_chain;
  end if;

  if in_database is not null then
    -- An empty per-database entry would hide a role-wide one: replace the entry PostgREST reads.
    execute pg_catalog.format(
      'alter role authenticator in database %I set pgrst.db_pre_request = %L',
      pg_catalog.current_database(), ours);
  else
    alter role authenticator set pgrst.db_pre_request = 'identity_guard.check_request';
  end if;
  notify pgrst, 'reload config';
  return 'registered ' || ours;
end;
$$;
comment on function identity_guard.install_pre_request() is
  'Sets pgrst.db_pre_request to identity_guard.check_request unless the project already has a '
  'pre-request function (then it raises, saying how to chain it); run by the migrations.';
revoke execute on function identity_guard.install_pre_request() from public;

select identity_guard.install_pre_request();
