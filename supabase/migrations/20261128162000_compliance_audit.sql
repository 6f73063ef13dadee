-- =============================================================================================
-- identity.compliance_audit: one row per compliance action (Shopify's shop/redact,
-- customers/data_request, customers/redact), kept as proof that it was carried out.
--
-- It holds no personal data: the shop is a keyed hash (HMAC-SHA256 computed by the SDK with a
-- key from its environment, so the key never reaches the database and the hash cannot be
-- reversed by guessing domains without it), plus the topic, the time and the counts.
--   anon, authenticated  nothing (RLS on, no grant, no policy).
--   service_role         SELECT and INSERT; never UPDATE or DELETE: the record is append-only.
-- =============================================================================================

create table identity.compliance_audit (
  id uuid primary key default gen_random_uuid(),
  shop_hash text not null
    constraint compliance_audit_shop_hash_format check (shop_hash ~ '^[0-9a-f]{64}$'),
  topic text not null
    constraint compliance_audit_topic_known
      check (topic in ('shop/redact', 'customers/redact', 'customers/data_request')),
  counts jsonb not null default '{}'::jsonb
    constraint compliance_audit_counts_object check (jsonb_typeof(counts) = 'object'),
  created_at timestamptz not null default now()
);
alter table identity.compliance_audit enable row level security;

comment on table identity.compliance_audit is
  'Compliance actions carried out (shop redactions, data requests); no personal data.';
comment on column identity.compliance_audit.shop_hash is
  'Hex HMAC-SHA256 of the normalized shop domain, keyed outside the database; never the domain.';
comment on column identity.compliance_audit.topic is 'The Shopify compliance topic acted on.';
comment on column identity.compliance_audit.counts is
  'What was found or deleted, per table (numbers only).';
comment on column identity.compliance_audit.created_at is 'When the action completed.';

-- One shop's history of actions, newest first (an auditor asks "what happened to this shop").
create index compliance_audit_shop_hash_created_at_idx
  on identity.compliance_audit (shop_hash, created_at desc);
comment on index identity.compliance_audit_shop_hash_created_at_idx is
  'Serves an audit of one shop (by its keyed hash), newest first.';

revoke all on identity.compliance_audit from public, anon, authenticated, service_role;
grant select, insert on identity.compliance_audit to service_role;

-- The planner-count guard every identity table carries (20261128100000): no role under RLS may
-- read this table today, and the guard keeps it so should a SELECT ever be granted.
create policy "Counts come from visible rows, never from planner estimates"
  on identity.compliance_audit as restrictive for select to public
  using (identity_guard.forbid_planner_counts());
comment on policy "Counts come from visible rows, never from planner estimates"
  on identity.compliance_audit is
  'Refuses EXPLAIN (planned/estimated counts) for roles subject to RLS; a no-op for queries.';
