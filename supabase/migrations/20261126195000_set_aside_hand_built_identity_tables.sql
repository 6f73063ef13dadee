-- =============================================================================================
-- In-place upgrade, step 1: set aside identity tables built by hand before these migrations.
--
-- The spec this project grew from had its users run one SQL script in the Supabase SQL editor:
-- identity.users / conversations / events with varchar ids, uuid-ossp defaults, nullable times,
-- `GRANT ALL … TO anon, authenticated` and no row level security; its quarterly maintenance
-- copied old events into an identity.events_archive of the same columns, which it left to the
-- user to create. On such a database 20261126200000_identity_schema.sql fails ("relation users
-- already exists"). This migration runs before it and, only when it finds those tables (the
-- archive being optional), moves them into the private schema
-- identity_legacy (not exposed by the Data API, no grants), so that the project's schema is
-- created exactly as on a new database. 20261128149000_import_legacy_identity_rows.sql later
-- copies every row into the new tables and drops identity_legacy.
--
-- It changes nothing when:
--   * schema identity has none of the three tables (a new database);
--   * the tables are this project's (identity.set_updated_at(), created with them, exists).
--
-- Before moving anything it checks every row the import could not store as it is (an id that is
-- not usr_ + 6-46 of [a-z0-9], a shop domain that is not <name>.myshopify.com, an event without
-- a user, ...). If any, it fails naming them and the database stays exactly as it was: fix or
-- delete those rows, then run `supabase db push` again. What the import can store without losing
-- anything is left to it (null start times, non-array messages, null metadata: see there).
-- =============================================================================================

do $$
declare
  v_tables constant text[] := array['users', 'conversations', 'events'];
  v_all constant text[] := v_tables || 'events_archive'::text;
  v_archive_problems text[];
  v_present text[];
  v_shape_problems text[];
  v_problems text[];
  v_table text;
begin
  select coalesce(array_agg(t.name order by t.ord), '{}')
    into v_present
    from unnest(v_all) with ordinality as t (name, ord)
   where pg_catalog.to_regclass('identity.' || pg_catalog.quote_ident(t.name)) is not null;

  if pg_catalog.cardinality(v_present) = 0
     or pg_catalog.to_regprocedure('identity.set_updated_at()') is not null then
    return;
  end if;

  -- ---------------------------------------------------------------------------------------
  -- Shape: all three tables (and the archive, if any), with the columns the import reads.
  -- ---------------------------------------------------------------------------------------
  with wanted (tbl, col, typ) as (
    -- The columns the import reads, with the type it needs ('*': any, it is read as text).
    values ('users', 'id', '*'), ('users', 'shop_domain', '*'), ('users', 'shopify_id', '*'),
           ('users', 'email', '*'), ('users', 'name', '*'),
           ('users', 'created_at', 'timestamp with time zone'),
           ('users', 'last_seen', 'timestamp with time zone'), ('users', 'metadata', 'jsonb'),
           ('conversations', 'id', 'uuid'), ('conversations', 'user_id', '*'),
           ('conversations', 'merchant_id', '*'), ('conversations', 'workflow_name', '*'),
           ('conversations', 'started_at', 'timestamp with time zone'),
           ('conversations', 'ended_at', 'timestamp with time zone'),
           ('conversations', 'messages', 'jsonb'), ('conversations', 'metadata', 'jsonb'),
           ('conversations', 'created_at', 'timestamp with time zone'),
           ('events', 'id', 'uuid'), ('events', 'user_id', '*'), ('events', 'event_type', '*'),
           ('events', 'event_data', 'jsonb'),
           ('events', 'created_at', 'timestamp with time zone'),
           ('events_archive', 'id', 'uuid'), ('events_archive', 'user_id', '*'),
           ('events_archive', 'event_type', '*'), ('events_archive', 'event_data', 'jsonb'),
           ('events_archive', 'created_at', 'timestamp with time zone')
  ),
  problems (problem) as (
    select pg_catalog.format('table identity.%s is missing', t.name)
      from unnest(v_tables) as t (name)
     where t.name <> all (v_present)
    union all
    select pg_catalog.format('column identity.%s.%s is %s', w.tbl, w.col,
             case when a.attname is null then 'missing'
                  else pg_catalog.format_type(a.atttypid, a.atttypmod) || ', not ' || w.typ
             end)
      from wanted as w
      left join pg_catalog.pg_attribute as a
        on a.attrelid = pg_catalog.to_regclass('identity.' || pg_catalog.quote_ident(w.tbl))
       and a.attname = w.col and a.attnum > 0 and not a.attisdropped
     where w.tbl = any (v_present)
       and (a.attname is null
            or (w.typ <> '*' and pg_catalog.format_type(a.atttypid, null) <> w.typ))
  )
  select coalesce(array_agg(p.problem order by p.problem), '{}')
    into v_shape_problems
    from problems as p;

  if pg_catalog.cardinality(v_shape_problems) > 0 then
    raise exception using
      errcode = 'object_not_in_prerequisite_state',
      message = 'schema identity already holds tables that this project''s migrations can '
        || 'neither create nor upgrade: ' || pg_catalog.array_to_string(v_shape_problems, '; ')
        || '. Only tables built by the original identity SQL (users, conversations, events, '
        || 'and an events_archive of the events'' columns) are upgraded in place; move these '
        || 'tables out of schema identity, then run '
        || '`supabase db push` again.';
  end if;

  -- ---------------------------------------------------------------------------------------
  -- Rows the import could not store as they are (same rules as the constraints it meets).
  -- ---------------------------------------------------------------------------------------
  with legacy_users as (
    select u.id::text as id,
           pg_catalog.lower(pg_catalog.btrim(u.shop_domain::text, E' \t\r\n')) as shop,
           u.shopify_id::text as shopify_id, u.email::text as email, u.name::text as name
      from identity.users as u
  ),
  findings as (
    select 'identity.users.id is not usr_ followed by 6-46 of [a-z0-9]' as rule, u.id as example
      from legacy_users as u where u.id is null or u.id !~ '^usr_[a-z0-9]{6,46}$'
    union all
    select 'identity.users.shop_domain is not <name>.myshopify.com (lower case once trimmed)',
           u.id
      from legacy_users as u
     where u.shop is null or u.shop !~ '^[a-z0-9][a-z0-9-]*\.myshopify\.com$'
        or pg_catalog.length(u.shop) > 255
    union all
    select 'identity.users.shop_domain names the same shop as another user once lower-cased',
           u.id
      from legacy_users as u
     where exists (select 1 from legacy_users as o where o.shop = u.shop and o.id <> u.id)
    union all
    select 'identity.users.shopify_id is longer than 100 characters', u.id
      from legacy_users as u where pg_catalog.length(u.shopify_id) > 100
    union all
    select 'identity.users.email is longer than 255 characters', u.id
      from legacy_users as u where pg_catalog.length(u.email) > 255
    union all
    select 'identity.users.name is longer than 255 characters', u.id
      from legacy_users as u where pg_catalog.length(u.name) > 255
    union all
    select 'identity.conversations.merchant_id is longer than 255 characters', c.id::text
      from identity.conversations as c where pg_catalog.length(c.merchant_id::text) > 255
    union all
    select 'identity.conversations.workflow_name is longer than 255 characters', c.id::text
      from identity.conversations as c where pg_catalog.length(c.workflow_name::text) > 255
    union all
    select 'identity.conversations.user_id names no user', c.id::text
      from identity.conversations as c
     where c.user_id is not null
       and not exists (select 1 from legacy_users as u where u.id = c.user_id::text)
    union all
    select 'identity.events.user_id is null (every event belongs to a user)', e.id::text
      from identity.events as e where e.user_id is null
    union all
    select 'identity.events.user_id names no user', e.id::text
      from identity.events as e
     where e.user_id is not null
       and not exists (select 1 from legacy_users as u where u.id = e.user_id::text)
    union all
    select 'identity.events.event_type is not [a-z] followed by up to 99 of [a-z0-9_.:-]',
           e.id::text
      from identity.events as e
     where e.event_type is null or e.event_type::text !~ '^[a-z][a-z0-9_.:-]{0,99}$'
  )
  select coalesce(array_agg(summary order by summary), '{}')
    into v_problems
    from (
      select pg_catalog.format('%s: %s row(s), e.g. %s', f.rule, pg_catalog.count(*),
               pg_catalog.array_to_string(
                 (pg_catalog.array_agg(pg_catalog.quote_nullable(f.example)
                                       order by f.example))[1:5], ', ')) as summary
        from findings as f
       group by f.rule
    ) as per_rule;

  -- The archive is optional: its query is planned only when the table exists.
  if 'events_archive' = any (v_present) then
    select coalesce(array_agg(pg_catalog.format('%s: %s row(s), e.g. %s', f.rule, f.n, f.examples)
                              order by f.rule), '{}')
      into v_archive_problems
      from (
        select a.rule, pg_catalog.count(*) as n,
               pg_catalog.array_to_string(
                 (pg_catalog.array_agg(pg_catalog.quote_nullable(a.id::text)
                                       order by a.id))[1:5], ', ') as examples
          from (
            select case
                     when e.user_id is null
                       then 'identity.events_archive.user_id is null (every event belongs to a user)'
                     else 'identity.events_archive.user_id names no user'
                   end as rule,
                   e.id
              from identity.events_archive as e
             where e.user_id is null
                or not exists (select 1 from identity.users as u
                                where u.id::text = e.user_id::text)
          ) as a
         group by a.rule
      ) as f;
    v_problems := v_problems || v_archive_problems;
  end if;

  if pg_catalog.cardinality(v_problems) > 0 then
    raise exception using
      errcode = 'check_violation',
      message = 'identity tables built by the original identity SQL hold rows this project''s '
        || 'schema cannot store as they are, so nothing was changed: '
        || pg_catalog.array_to_string(v_problems, '; ')
        || '. Fix or delete those rows, then run `supabase db push` again.';
  end if;

  -- ---------------------------------------------------------------------------------------
  -- Set aside. ALTER … SET SCHEMA keeps rows, indexes, constraints and foreign keys.
  -- ---------------------------------------------------------------------------------------
  create schema identity_legacy;
  comment on schema identity_legacy is
    'Identity tables built before this project''s migrations, set aside until '
    '20261128149000_import_legacy_identity_rows.sql copies their rows and drops this schema.';
  revoke all on schema identity_legacy from public;

  foreach v_table in array v_present loop
    execute pg_catalog.format('alter table identity.%I set schema identity_legacy', v_table);
    -- The original SQL granted ALL to anon and authenticated: take back every grant at once.
    execute pg_catalog.format(
      'revoke all on identity_legacy.%I from public, anon, authenticated, service_role',
      v_table);
  end loop;

  -- The original SQL also granted USAGE on schema identity to anon (and to authenticated,
  -- which 20261126200000_identity_schema.sql grants again on its own terms).
  revoke all on schema identity from anon, authenticated;
end;
$$;
