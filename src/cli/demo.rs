//! `notifier demo`: a small data set to see the whole flow on a fresh machine — two programs,
//! users in English and Japanese who clip them, Android and iOS devices, one of them disabled.
//! Talk 1 reaches four devices: the author's own device and the disabled one get nothing.

use crate::config::{Settings, redact_url};
use crate::database::{Database, DatabaseError};

/// Migrates the configured database, seeds it, and shows how to trigger the demo talk.
pub(super) async fn demo(settings: &Settings) -> anyhow::Result<()> {
    let db = super::connect(settings).await?;
    db.migrate().await?;
    let seeded = seed(&db).await?;
    db.close().await;
    let channel = &settings.service.channel;
    println!(
        "{} {}.",
        if seeded {
            "Seeded the demo data into"
        } else {
            "The demo data is already in"
        },
        redact_url(&settings.database.url)
    );
    println!(
        "\nStart the worker (dry run):   notifier run\n\
         Then trigger talk 1 (4 devices) from a shell:\n\
         \n    redis-cli PUBLISH {channel} '{{\"talk_id\": 1}}'\n\
         \nor from PHP (phpredis):\n\
         \n    php -r '$r = new Redis(); $r->connect(\"127.0.0.1\"); $r->publish(\"{channel}\", json_encode([\"talk_id\" => 1]));'\n\
         \nor with the notifier itself:   notifier publish 1"
    );
    Ok(())
}

/// Seeds the demo data unless it is there already; returns whether it seeded.
pub async fn seed(db: &Database) -> Result<bool, DatabaseError> {
    let present = match db {
        Database::Postgres(p) => sqlx::query("SELECT 1 FROM programs WHERE id = 1")
            .fetch_optional(p)
            .await?
            .is_some(),
        Database::MySql(p) => sqlx::query("SELECT 1 FROM programs WHERE id = 1")
            .fetch_optional(p)
            .await?
            .is_some(),
        Database::Sqlite(p) => sqlx::query("SELECT 1 FROM programs WHERE id = 1")
            .fetch_optional(p)
            .await?
            .is_some(),
    };
    if present {
        return Ok(false);
    }
    for statement in SEED {
        match db {
            Database::Postgres(p) => sqlx::query(*statement).execute(p).await.map(drop)?,
            Database::MySql(p) => sqlx::query(*statement).execute(p).await.map(drop)?,
            Database::Sqlite(p) => sqlx::query(*statement).execute(p).await.map(drop)?,
        }
    }
    Ok(true)
}

/// Plain SQL that all three backends accept.
const SEED: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES
        (1, 'Aiko', 'ja'), (2, 'Ben', 'en'), (3, 'Chie', 'ja-JP'), (4, 'Dan', NULL), (5, 'Emi', 'en-US')",
    "INSERT INTO programs (id, user_id, title) VALUES
        (1, 1, '朝のラジオ Morning Radio'), (2, 2, 'Night Owls')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES
        (1, 1, 1, 'Episode 1: おはようございます'), (2, 2, 2, 'Owls at midnight')",
    "INSERT INTO clips (user_id, program_id) VALUES (1, 1), (2, 1), (3, 1), (4, 1), (3, 2), (5, 2)",
    "INSERT INTO devices (id, user_id, provider, platform, token, disabled_at, disabled_reason) VALUES
        (1, 1, 'fcm',  'android', 'demo-fcm-token-aiko-pixel-0001', NULL, NULL),
        (2, 2, 'fcm',  'android', 'demo-fcm-token-ben-galaxy-0002', NULL, NULL),
        (3, 2, 'apns', 'ios',     'b3f1c0de00000000000000000000000000000000000000000000000000000003', NULL, NULL),
        (4, 3, 'apns', 'ios',     'c4a1e5ed00000000000000000000000000000000000000000000000000000004', NULL, NULL),
        (5, 3, 'fcm',  'android', 'demo-fcm-token-chie-old-phone-05', CURRENT_TIMESTAMP, 'fcm:UNREGISTERED'),
        (6, 4, 'fcm',  'web',     'demo-fcm-token-dan-browser-0006', NULL, NULL),
        (7, 5, 'fcm',  'android', 'demo-fcm-token-emi-pixel-0007', NULL, NULL)",
];
