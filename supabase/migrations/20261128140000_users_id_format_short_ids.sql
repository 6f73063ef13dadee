-- =============================================================================================
-- users.id: usr_ followed by 6 to 46 of [a-z0-9] (was 16 to 46).
--
-- Ids written before this package, by the original identity library and its SQL-editor test
-- rows (usr_test123, usr_12345678), are shorter than the 16 characters the first schema asked
-- for; 46 is what the original varchar(50) column could hold after "usr_". New ids do not
-- change: identity.get_or_create_user and the client still make usr_ + 24 random hex characters.
-- The check only widens, so every stored row passes it.
-- =============================================================================================

alter table identity.users drop constraint users_id_format;
alter table identity.users
  add constraint users_id_format check (id ~ '^usr_[a-z0-9]{6,46}$');

comment on constraint users_id_format on identity.users is
  'usr_ followed by 6-46 lowercase letters or digits (ids from before this package included).';
comment on column identity.users.id is
  'usr_ followed by 6-46 of [a-z0-9]; new ids are usr_ + 24 random hex characters, never '
  'derived from the shop domain.';
