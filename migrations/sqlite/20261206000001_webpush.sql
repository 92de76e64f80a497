-- Web Push (a third provider): a device whose provider is 'webpush' (platform 'web', allowed
-- already) holds in its token the subscription JSON the browser gave (TEXT holds any length).
-- SQLite cannot change a CHECK constraint in place, so the table is made again with the new one
-- and the rows copied, ids and all; no other table refers to devices.
CREATE TABLE devices_webpush (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    provider        TEXT NOT NULL CHECK (provider IN ('fcm', 'apns', 'webpush')),
    platform        TEXT NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
    token           TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    disabled_at     TEXT,
    disabled_reason TEXT,
    app             TEXT
);
INSERT INTO devices_webpush (id, user_id, provider, platform, token, created_at, updated_at,
                             disabled_at, disabled_reason, app)
SELECT id, user_id, provider, platform, token, created_at, updated_at, disabled_at,
       disabled_reason, app
FROM devices;
DROP TABLE devices;
ALTER TABLE devices_webpush RENAME TO devices;
CREATE INDEX devices_user_id ON devices (user_id);
