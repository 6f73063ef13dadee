-- =============================================================================================
-- identity.stats reports how long before its Redis expiry each conversation was archived.
--
-- The archiver records in metadata.archive.expires_at when the Redis copy would have expired
-- (the key's PTTL when it was read; ISO-8601 UTC). Over the conversations archived in the
-- 24 hours up to as_of that carry one, archival gains:
--   expiry_samples             how many carry a readable expiry;
--   before_expiry_avg_seconds  average of expires_at - archived_at ("archived N minutes before
--                              expiry");
--   before_expiry_min_seconds  the closest call; negative when a row was archived after the
--                              expiry it recorded (read just before the key expired).
-- Latency changes meaning for rows without ended_at: their expiry starts a latency only when the
-- archive came after it. Before, every such row archived ahead of its expiry would have counted
-- as a latency of 0 s once the archiver recorded expiries, dragging the average toward 0.
-- Everything else is as in 20261128110100_stats_function.sql.
-- =============================================================================================

create or replace function identity.stats(as_of timestamptz default now())
returns jsonb
  language sql
  stable
  security invoker
  set search_path = ''
  set timezone = 'UTC'
as $$
  with
  hours as (
    select h
    from pg_catalog.generate_series(
      pg_catalog.date_trunc('hour', stats.as_of) - interval '23 hours',
      pg_catalog.date_trunc('hour', stats.as_of),
      interval '1 hour'
    ) as h
  ),
  recent as (
    select c.archived_at, pg_catalog.date_trunc('hour', c.archived_at) as hour,
           -- a conversation that ended after it was archived (clock skew) counts as 0 s
           case when e.since is not null
                then greatest(extract(epoch from c.archived_at - e.since)::float8, 0)
           end as latency,
           -- positive: archived that long before the Redis copy would have expired
           extract(epoch from x.expires_at - c.archived_at)::float8 as before_expiry
    from identity.conversations as c
    cross join lateral (
      -- ISO-8601 read by a silent jsonpath: a missing or malformed expiry is null, never an
      -- error (PostgreSQL 15's datetime() wants +00:00 where Python may write Z)
      select (pg_catalog.jsonb_path_query_first(
                pg_catalog.jsonb_build_object('t', pg_catalog.regexp_replace(
                  c.metadata #>> '{archive,expires_at}', 'Z$', '+00:00')),
                '$.t.datetime()', '{}', true) #>> '{}')::timestamptz as expires_at
    ) as x
    cross join lateral (
      -- the expiry only starts a latency when the archive came after it: one archived before
      -- its expiry waited for nothing (its margin is before_expiry)
      select coalesce(c.ended_at,
                      case when x.expires_at < c.archived_at then x.expires_at end) as since
    ) as e
    where c.archived_at > stats.as_of - interval '24 hours' and c.archived_at <= stats.as_of
  ),
  per_hour as (
    select coalesce(pg_catalog.jsonb_agg(
             pg_catalog.jsonb_build_object('hour', hours.h, 'count', coalesce(n.count, 0))
             order by hours.h), '[]'::jsonb) as series,
           coalesce(sum(n.count), 0) as total
    from hours
    left join (
      select r.hour as h, count(*) as count from recent as r group by r.hour
    ) as n on n.h = hours.h
  ),
  latency as (
    select count(r.latency) as samples,
           avg(r.latency) as average,
           percentile_cont(0.95) within group (order by r.latency) as p95,
           count(r.before_expiry) as expiry_samples,
           avg(r.before_expiry) as before_expiry_average,
           min(r.before_expiry) as before_expiry_min
    from recent as r
  ),
  days as (
    select d
    from pg_catalog.generate_series(
      pg_catalog.date_trunc('day', stats.as_of) - interval '29 days',
      pg_catalog.date_trunc('day', stats.as_of),
      interval '1 day'
    ) as d
  ),
  known_users as (
    select u.id, u.created_at, u.last_seen
    from identity.users as u
    where u.created_at <= stats.as_of
  ),
  per_day as (
    select coalesce(pg_catalog.jsonb_agg(
             pg_catalog.jsonb_build_object('day', days.d::date, 'count', coalesce(n.count, 0))
             order by days.d), '[]'::jsonb) as series,
           coalesce(sum(n.count), 0) as total
    from days
    left join (
      select pg_catalog.date_trunc('day', u.created_at) as d, count(*) as count
      from known_users as u group by 1
    ) as n on n.d = days.d
  ),
  growth as (
    select count(*) as total,
           count(*) filter (where u.last_seen >= u.created_at + interval '1 day') as returning
    from known_users as u
  ),
  per_user as (
    select count(c.id) as conversations
    from known_users as u
    left join identity.conversations as c
      on c.user_id = u.id and c.created_at <= stats.as_of
    group by u.id
  ),
  per_user_stats as (
    select percentile_cont(0.5) within group (order by p.conversations) as median,
           percentile_cont(0.95) within group (order by p.conversations) as p95,
           avg(p.conversations) as mean
    from per_user as p
  ),
  tables as (
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'name', c.relname,
             'rows_estimate', greatest(c.reltuples, 0)::bigint,
             'table_bytes', pg_catalog.pg_table_size(c.oid),
             'index_bytes', pg_catalog.pg_indexes_size(c.oid),
             'total_bytes', pg_catalog.pg_total_relation_size(c.oid),
             'seq_scans', coalesce(s.seq_scan, 0),
             'index_scans', coalesce(s.idx_scan, 0)
           ) order by c.relname), '[]'::jsonb) as list
    from pg_catalog.pg_class as c
    left join pg_catalog.pg_stat_all_tables as s on s.relid = c.oid
    where c.relnamespace = 'identity'::regnamespace and c.relkind in ('r', 'p')
  ),
  indexes as (
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'name', i.relname,
             'table', t.relname,
             'bytes', pg_catalog.pg_relation_size(i.oid),
             'scans', coalesce(s.idx_scan, 0),
             'unique', x.indisunique
           ) order by t.relname, i.relname), '[]'::jsonb) as list
    from pg_catalog.pg_index as x
    join pg_catalog.pg_class as i on i.oid = x.indexrelid
    join pg_catalog.pg_class as t on t.oid = x.indrelid
    left join pg_catalog.pg_stat_all_indexes as s on s.indexrelid = x.indexrelid
    where t.relnamespace = 'identity'::regnamespace and t.relkind in ('r', 'p')
  )
  select pg_catalog.jsonb_build_object(
    'as_of', stats.as_of,
    'archival', pg_catalog.jsonb_build_object(
      'archived_per_hour', per_hour.series,
      'archived_24h', per_hour.total,
      'latency_samples', latency.samples,
      'latency_avg_seconds', round(latency.average::numeric, 3),
      'latency_p95_seconds', round(latency.p95::numeric, 3),
      'expiry_samples', latency.expiry_samples,
      'before_expiry_avg_seconds', round(latency.before_expiry_average::numeric, 3),
      'before_expiry_min_seconds', round(latency.before_expiry_min::numeric, 3),
      'unlinked_conversations',
        (select count(*) from identity.conversations as c
         where c.user_id is null and c.created_at <= stats.as_of)
    ),
    'users', pg_catalog.jsonb_build_object(
      'total', growth.total,
      'new_per_day', per_day.series,
      'new_30d', per_day.total,
      'returning', growth.returning,
      'returning_rate', round(growth.returning::numeric / nullif(growth.total, 0), 4),
      'conversations_per_user_median', round(per_user_stats.median::numeric, 3),
      'conversations_per_user_p95', round(per_user_stats.p95::numeric, 3),
      'conversations_per_user_mean', round(per_user_stats.mean, 3)
    ),
    'storage', pg_catalog.jsonb_build_object('tables', tables.list, 'indexes', indexes.list)
  )
  from per_hour, latency, per_day, growth, per_user_stats, tables, indexes;
$$;
comment on function identity.stats(timestamptz) is
  'Archival, user-growth and storage metrics as one JSON document (supabase-identity stats).';
revoke execute on function identity.stats(timestamptz) from public;
grant execute on function identity.stats(timestamptz) to service_role;
