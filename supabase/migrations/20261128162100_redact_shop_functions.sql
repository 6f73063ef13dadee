-- =============================================================================================
-- Shopify compliance: every copy of a shop's data in the database, erased or summarized in one
-- call, with an audit row (identity.compliance_audit) written in the same transaction.
--
-- Both functions are SECURITY INVOKER and callable by service_role only: the backend already
-- holds DELETE on these tables, so no owner rights are needed. The shop domain is normalized as
-- get_or_create_user does; shop_hash is the SDK's keyed hash of that normalized domain.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- redact_shop: deletes the shop's user, its conversations, events and archived events in one
-- transaction, and returns what it deleted. Idempotent: a second call deletes nothing and says
-- so (and is audited too, so a redelivered request leaves a trace).
-- ---------------------------------------------------------------------------------------------
create function identity.redact_shop(shop_domain text, shop_hash text)
returns jsonb
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  v_shop text := lower(btrim(redact_shop.shop_domain, E' \t\r\n'));
  v_user text;
  v_conversations bigint := 0;
  v_events bigint := 0;
  v_events_archive bigint := 0;
  v_users bigint := 0;
  v_counts jsonb;
begin
  select u.id into v_user from identity.users as u where u.shop_domain = v_shop for update;
  if found then
    delete from identity.events as e where e.user_id = v_user;
    get diagnostics v_events = row_count;
    delete from identity.events_archive as e where e.user_id = v_user;
    get diagnostics v_events_archive = row_count;
    delete from identity.conversations as c where c.user_id = v_user;
    get diagnostics v_conversations = row_count;
    delete from identity.users as u where u.id = v_user;
    get diagnostics v_users = row_count;
  end if;
  v_counts := pg_catalog.jsonb_build_object(
    'users', v_users,
    'conversations', v_conversations,
    'events', v_events,
    'events_archive', v_events_archive
  );
  insert into identity.compliance_audit (shop_hash, topic, counts)
  values (redact_shop.shop_hash, 'shop/redact', v_counts);
  return v_counts || pg_catalog.jsonb_build_object('user_id', v_user);
end;
$$;
comment on function identity.redact_shop(text, text) is
  'Deletes a shop''s user, conversations, events and archived events; audits it; returns counts.';
revoke execute on function identity.redact_shop(text, text) from public;
grant execute on function identity.redact_shop(text, text) to service_role;

-- ---------------------------------------------------------------------------------------------
-- shop_data_summary: what the database holds for a shop (counts and the user id), audited under
-- the compliance topic that asked (customers/data_request, customers/redact). Nothing is read
-- beyond counts: the package keeps no per-customer records to return.
-- ---------------------------------------------------------------------------------------------
create function identity.shop_data_summary(shop_domain text, shop_hash text, topic text)
returns jsonb
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  v_shop text := lower(btrim(shop_data_summary.shop_domain, E' \t\r\n'));
  v_user text;
  v_counts jsonb;
begin
  select u.id into v_user from identity.users as u where u.shop_domain = v_shop;
  v_counts := pg_catalog.jsonb_build_object(
    'users', (v_user is not null)::int,
    'conversations', (select count(*) from identity.conversations as c where c.user_id = v_user),
    'events', (select count(*) from identity.events as e where e.user_id = v_user),
    'events_archive',
      (select count(*) from identity.events_archive as e where e.user_id = v_user)
  );
  insert into identity.compliance_audit (shop_hash, topic, counts)
  values (shop_data_summary.shop_hash, shop_data_summary.topic, v_counts);
  return v_counts || pg_catalog.jsonb_build_object('user_id', v_user);
end;
$$;
comment on function identity.shop_data_summary(text, text, text) is
  'Counts what the database holds for a shop and audits the compliance request that asked.';
revoke execute on function identity.shop_data_summary(text, text, text) from public;
grant execute on function identity.shop_data_summary(text, text, text) to service_role;
