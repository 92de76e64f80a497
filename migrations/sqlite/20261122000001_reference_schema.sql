-- The reference schema: programs, talks, the users who clip programs, and their devices.
CREATE TABLE users (
    id     INTEGER PRIMARY KEY,
    name   TEXT NOT NULL,
    locale TEXT
);

CREATE TABLE programs (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    title   TEXT NOT NULL
);

CREATE TABLE talks (
    id         INTEGER PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    title      TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX talks_program_id ON talks (program_id);

-- A clip is a user's subscription to a program.
CREATE TABLE clips (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    program_id INTEGER NOT NULL REFERENCES programs (id),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (user_id, program_id)
) WITHOUT ROWID;
CREATE INDEX clips_program_id ON clips (program_id, user_id);

CREATE TABLE devices (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    provider        TEXT NOT NULL CHECK (provider IN ('fcm', 'apns')),
    platform        TEXT NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
    token           TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    disabled_at     TEXT,
    disabled_reason TEXT
);
CREATE INDEX devices_user_id ON devices (user_id);
