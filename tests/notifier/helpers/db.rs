//! A database of its own per test, on PostgreSQL, MariaDB or SQLite, migrated and dropped with
//! the value; the scenario most tests read.

use notifier::database::{Backend, Database};

use super::{
    address, init_tracing, mysql_admin_url, postgres_admin_url, settings_with, unique,
    with_database,
};

/// A database of its own for one test, migrated; dropped when the value is.
pub struct TestDb {
    pub url: String,
    pub db: Database,
    name: String,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let test_db = Self::empty(backend).await;
        test_db
            .db
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrating the {} test database: {e}", backend.name()));
        test_db
    }

    /// A fresh database without the reference schema (for tests with tables of their own).
    pub async fn empty(backend: Backend) -> Self {
        init_tracing();
        let name = unique("notifier_t");
        let (url, dir) = match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                admin_execute(&admin, &format!("CREATE DATABASE {name}")).await;
                (with_database(&admin, &name), None)
            }
            Backend::MySql => {
                let admin = mysql_admin_url();
                let sql = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4");
                admin_execute(&admin, &sql).await;
                (with_database(&admin, &name), None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                (url, Some(dir))
            }
        };
        let settings = settings_with(&[("DATABASE_URL", &url)]);
        let db = Database::connect(&settings.database)
            .await
            .unwrap_or_else(|e| panic!("connecting to the {} test database: {e}", backend.name()));
        Self {
            url,
            db,
            name,
            backend,
            _dir: dir,
        }
    }

    /// Runs statements that all backends accept.
    pub async fn execute(&self, statements: &[&str]) {
        for statement in statements {
            let s = sqlx::AssertSqlSafe(statement.to_string());
            let result = match &self.db {
                Database::Postgres(p) => sqlx::query(s).execute(p).await.map(drop),
                Database::MySql(p) => sqlx::query(s).execute(p).await.map(drop),
                Database::Sqlite(p) => sqlx::query(s).execute(p).await.map(drop),
            };
            result.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
}

impl TestDb {
    /// Runs a query that returns one number on the server's admin database.
    pub async fn scalar_on_admin(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL admin connection to {}: {e}", address(&admin)));
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Kills every MariaDB connection to database `name` but this one; returns how many.
    pub async fn kill_mysql_connections(&self, name: &str) -> usize {
        use sqlx::Connection;
        let admin = mysql_admin_url();
        let mut conn = sqlx::MySqlConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("MariaDB admin connection to {}: {e}", address(&admin)));
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM information_schema.processlist WHERE db = '{name}' AND id <> CONNECTION_ID()"
        )))
        .fetch_all(&mut conn)
        .await
        .expect("processlist");
        for id in &ids {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                .execute(&mut conn)
                .await;
        }
        ids.len()
    }

    /// Devices disabled, as `id:reason`, in id order.
    pub async fn disabled(&self) -> Vec<String> {
        let sql =
            "SELECT id, disabled_reason FROM devices WHERE disabled_at IS NOT NULL ORDER BY id";
        let rows: Vec<(i64, Option<String>)> = match &self.db {
            Database::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
            Database::MySql(p) => sqlx::query_as(sql).fetch_all(p).await,
            Database::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|(id, reason)| format!("{id}:{}", reason.unwrap_or_default()))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop is synchronous and may run on the test's runtime, which must not be blocked on:
        // a thread with a runtime of its own drops the database through the same admin URL it
        // was made with (a password in it included, which a client's command line would not get).
        let (admin, sql) = match self.backend {
            Backend::Postgres => (
                postgres_admin_url(),
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ),
            Backend::MySql => (
                mysql_admin_url(),
                format!("DROP DATABASE IF EXISTS {}", self.name),
            ),
            Backend::Sqlite => return,
        };
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = runtime.block_on(try_admin_execute(&admin, &sql));
            }
        })
        .join();
    }
}

async fn try_admin_execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let s = sqlx::AssertSqlSafe(sql.to_string());
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::query(s).execute(&mut c).await.map(drop)
    } else {
        let mut c = sqlx::MySqlConnection::connect(url).await?;
        sqlx::query(s).execute(&mut c).await.map(drop)
    }
}

async fn admin_execute(url: &str, sql: &str) {
    if let Err(e) = try_admin_execute(url, sql).await {
        let (service, variable) = if url.starts_with("postgres") {
            ("PostgreSQL", "TEST_POSTGRES_URL")
        } else {
            ("MariaDB", "TEST_MYSQL_URL")
        };
        panic!(
            "{service} at {} is needed by this test and did not work ({sql}): {e} \
             (scripts/test starts it, or set {variable} to one that runs)",
            address(url)
        );
    }
}

/// The scenario most tests use. Talk 100 of program 10 (by user 1) must reach devices
/// 2, 3, 4, 6 and 8: device 1 is the author's, 5 is disabled, 7's user clipped only program 11.
pub const SCENARIO: &[&str] = &[
    "INSERT INTO users (id, name, locale) VALUES (1, 'author', 'en'), (2, 'ben', 'en'), (3, 'chie', 'ja'), (4, 'dan', NULL), (5, 'emi', 'en'), (6, 'fumi', 'ja-JP')",
    "INSERT INTO programs (id, user_id, title) VALUES (10, 1, '深夜ラジオ'), (11, 2, 'Other show')",
    "INSERT INTO talks (id, program_id, user_id, title) VALUES (100, 10, 1, '第1回 Hello'), (101, 11, 2, 'Other talk')",
    "INSERT INTO clips (user_id, program_id) VALUES (1, 10), (2, 10), (3, 10), (4, 10), (5, 11), (6, 10), (6, 11)",
    "INSERT INTO devices (id, user_id, provider, platform, token) VALUES
        (1, 1, 'fcm', 'android', 'token-author-000001'),
        (2, 2, 'fcm', 'android', 'token-ben-android-02'),
        (3, 2, 'apns', 'ios', 'token-ben-iphone-0003'),
        (4, 3, 'apns', 'ios', 'token-chie-iphone-004'),
        (6, 4, 'fcm', 'web', 'token-dan-browser-006'),
        (7, 5, 'fcm', 'android', 'token-emi-android-007'),
        (8, 6, 'apns', 'ios', 'token-fumi-iphone-008')",
    "INSERT INTO devices (id, user_id, provider, platform, token, disabled_at, disabled_reason) VALUES
        (5, 3, 'fcm', 'android', 'token-chie-disabled-5', CURRENT_TIMESTAMP, 'fcm:UNREGISTERED')",
];

pub const SCENARIO_RECIPIENTS: &[i64] = &[2, 3, 4, 6, 8];

/// A database with [`SCENARIO`] in it.
pub async fn scenario_db(backend: Backend) -> TestDb {
    let test_db = TestDb::new(backend).await;
    test_db.execute(SCENARIO).await;
    test_db
}

/// Devices 1..=n of user 2 on SQLite: odd ids through FCM, even ids through APNs.
pub async fn sqlite_devices(test_db: &TestDb, n: u32) {
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO devices (id, user_id, provider, platform, token)
         SELECT i, 2, CASE WHEN i % 2 = 0 THEN 'apns' ELSE 'fcm' END, 'android', 'token-' || i FROM n"
    );
    test_db.execute(&[&sql]).await;
}
