-- no-transaction
-- Each provider's lane reads its devices in id order (`d.provider = :provider AND d.id >
-- :after_id ... ORDER BY d.id`). Without this index, a provider with few or no devices (a
-- deployment with no Web Push subscribers yet) had its lane walk the audience's devices to find
-- none, on every event; with it, that read ends at once. Built CONCURRENTLY (hence outside a
-- transaction), so the app's writes to `devices` carry on meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_provider_id
    ON devices (provider, id) WHERE disabled_at IS NULL;
