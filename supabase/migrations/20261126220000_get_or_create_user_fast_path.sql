-- =============================================================================================
-- get_or_create_user, second version: a returning shop that brings nothing new is a "touch".
--
-- Measured with pgbench on the local stack, the first (SQL) version spent most of each call
-- waiting for the WAL flush of its last_seen update: every OAuth callback and every service
-- call paid a disk sync for a timestamp. Now:
--   * a touch (no field would change but last_seen) commits asynchronously: losing a last_seen
--     bump in a crash is harmless; it never affects which id a shop gets;
--   * a new user, or a changed email/name/shopify_id, commits with the configured durability
--     (even after a touch in the same transaction), so an id that was returned is never lost;
--   * plpgsql caches its plans per connection (a SQL function with SET is re-planned per call).
-- Still race-free: the INSERT … ON CONFLICT path is unchanged, and the first SELECT … FOR
-- UPDATE only ever finds a row that exists.
-- =============================================================================================
create or replace function identity.get_or_create_user(
  shop_domain text,
  email text default null,
  name text default null,
  shopify_id text default null
)
returns table (user_id text, is_new boolean)
  language plpgsql
  volatile
  security invoker
  set search_path = ''
as $$
declare
  v_shop text := lower(btrim(get_or_create_user.shop_domain, E' \t\r\n'));
  v_email text := nullif(btrim(get_or_create_user.email), '');
  v_name text := nullif(btrim(get_or_create_user.name), '');
  v_shopify_id text := nullif(btrim(get_or_create_user.shopify_id), '');
  v_user identity.users%rowtype;
begin
  select * into v_user from identity.users as u where u.shop_domain = v_shop for update;
  if found then
    if (v_email is null or v_email = v_user.email)
       and (v_name is null or v_name = v_user.name)
       and (v_shopify_id is null or v_shopify_id = v_user.shopify_id) then
      perform pg_catalog.set_config('synchronous_commit', 'off', true);
    else
      -- A real change: durable, even if a touch earlier in this transaction relaxed it.
      set local synchronous_commit to default;
    end if;
    update identity.users as u
       set last_seen = now(),
           email = coalesce(v_email, u.email),
           name = coalesce(v_name, u.name),
           shopify_id = coalesce(v_shopify_id, u.shopify_id)
     where u.id = v_user.id;
    return query select v_user.id, false;
    return;
  end if;

  set local synchronous_commit to default;
  return query
  insert into identity.users as u (id, shop_domain, email, name, shopify_id)
  values ('usr_' || encode(extensions.gen_random_bytes(12), 'hex'), v_shop, v_email, v_name,
          v_shopify_id)
  on conflict on constraint users_shop_domain_key do update
    set last_seen = now(),
        email = coalesce(excluded.email, u.email),
        name = coalesce(excluded.name, u.name),
        shopify_id = coalesce(excluded.shopify_id, u.shopify_id)
  returning u.id, (u.xmax = 0);
end;
$$;
comment on function identity.get_or_create_user(text, text, text, text) is
  'Returns (user_id, is_new) for a shop domain, creating the user on first sight; race-free.';
revoke execute on function identity.get_or_create_user(text, text, text, text) from public;
grant execute on function identity.get_or_create_user(text, text, text, text) to service_role;
