-- =============================================================================================
-- identity.events_archive: where events older than the retention window go (the seed's
-- quarterly "move events older than 90 days"), so identity.events stays small and hot while
-- nothing is deleted. Same shape, same access model as identity.events:
--   anon           nothing.
--   authenticated  reads its own archived events (the same policy as identity.events).
--   service_role   SELECT, INSERT (the move), DELETE (erasing a user's data); never UPDATE.
-- Rows are written only by identity.archive_old_events (a later migration).
-- =============================================================================================

create table identity.events_archive (
  id uuid primary key,
  user_id text not null references identity.users (id) on delete cascade,
  event_type text not null,
  event_data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null,
  received_at timestamptz not null,
  archived_at timestamptz not null default now()
);
alter table identity.events_archive enable row level security;

comment on table identity.events_archive is
  'Events moved out of identity.events after the retention window; same ids, same columns.';
comment on column identity.events_archive.id is
  'The event id from identity.events (client-generated), kept so a moved event stays unique.';
comment on column identity.events_archive.created_at is 'When the event happened (set by the client).';
comment on column identity.events_archive.received_at is 'When identity.events stored it.';
comment on column identity.events_archive.archived_at is 'When it was moved here.';

-- A user's archived events, newest first; also serves the user_id foreign key.
create index events_archive_user_id_created_at_idx
  on identity.events_archive (user_id, created_at desc);
comment on index identity.events_archive_user_id_created_at_idx is
  'Serves a user''s archived events (newest first) and the user_id foreign key.';

-- The move takes the oldest events first, one bounded batch at a time: without this index each
-- batch would read the whole events table.
create index events_created_at_idx on identity.events (created_at);
comment on index identity.events_created_at_idx is
  'Serves identity.archive_old_events: the oldest events, batch by batch, without a full scan.';

-- ---------------------------------------------------------------------------------------------
-- Privileges: explicit, least privilege.
-- ---------------------------------------------------------------------------------------------
revoke all on identity.events_archive from public, anon, authenticated, service_role;
grant select on identity.events_archive to authenticated;
grant select, insert, delete on identity.events_archive to service_role;

create policy "Users can read their own archived events"
  on identity.events_archive for select to authenticated
  using (user_id = ((select auth.jwt()) -> 'app_metadata' ->> 'user_id'));
