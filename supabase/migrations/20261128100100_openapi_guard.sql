-- =============================================================================================
-- No OpenAPI description of schema identity for anyone but the service role.
--
-- PostgREST describes a schema at the root of the API (`GET /rest/v1/` with
-- `Accept-Profile: identity`). Under its default openapi-mode (follow-privileges) the public key
-- already sees no table or function of identity, but it still gets the schema's comment and
-- the server's address; a user-scoped token sees every identity table and column. The switch
-- PostgREST offers, openapi-mode = disabled, is project-wide: it would take the description of
-- every other schema away too (Supabase's dashboard reads it with the secret key).
--
-- PostgREST runs its pre-request function (db-pre-request, which hosted Supabase lets a project
-- set: see 20261128100200) inside the transaction of every request that reaches the database,
-- the OpenAPI root included, after it has switched to the caller's role. This function refuses
-- the root of schema identity to every role that does not bypass row level security, and does
-- nothing for any other request: it is global to the project, so other schemas' requests,
-- and identity's tables and functions, pass untouched.
--
-- How it knows the request's schema: PostgREST sets search_path to the request's schema
-- followed by db-extra-search-path before it calls the pre-request function, from the schema
-- it actually serves (the first Accept-Profile/Content-Profile header, or the first exposed
-- schema). `request.headers` is not a reliable source: with a header sent twice it holds only
-- the last copy. The function pins its own search_path, so it reads PostgREST's value through
-- its parameter's default, which PostgreSQL evaluates in the caller (`select f()`).
-- =============================================================================================

create function identity_guard.check_request(
  request_search_path text default pg_catalog.current_setting('search_path')
) returns void
  language plpgsql
  stable
  security invoker
  set search_path = ''
as $$
begin
  -- Cheapest test first: nearly every request names a table or a function.
  if pg_catalog.btrim(coalesce(pg_catalog.current_setting('request.path', true), ''), '/') <> '' then
    return;
  end if;
  if pg_catalog.btrim(pg_catalog.split_part(request_search_path, ',', 1), ' "') <> 'identity' then
    return;
  end if;
  if exists (select from pg_catalog.pg_roles as r
             where r.rolname = current_user and (r.rolbypassrls or r.rolsuper)) then
    return;
  end if;
  raise exception using
    errcode = '42501',
    message = 'the API description of schema identity is available to the service role only';
end;
$$;
comment on function identity_guard.check_request(text) is
  'PostgREST pre-request check: refuses the OpenAPI description of schema identity to roles '
  'subject to RLS; every other request passes. Chain it from another pre-request function with '
  'perform identity_guard.check_request(<search_path captured as this function does>).';
-- PostgREST calls it as whichever role the request's token names, so every role may.
grant execute on function identity_guard.check_request(text) to public;
