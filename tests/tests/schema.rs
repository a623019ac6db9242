//! The schema three ways must agree: the PostgreSQL migrations the server runs, the hand-run
//! scripts in sql-scripts/ (for DBAs who create schemas themselves), and the SQLite migrations.
//! A table, column, nullability, default or index that one has and another lacks fails here.

use std::collections::BTreeSet;

use auditseal_e2e::{Backend, exec, new_database, workspace_root};
use sqlx::{Connection, Row};

/// One line per column and per index of the public schema, sqlx's own table left out.
async fn pg_schema(url: &str) -> BTreeSet<String> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut out = BTreeSet::new();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
         coalesce(column_default::text, '') FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for r in columns {
        let f: Vec<String> = (0..5).map(|i| r.get::<String, _>(i)).collect();
        out.insert(format!(
            "column {}.{} {} nullable={} default={}",
            f[0], f[1], f[2], f[3], f[4]
        ));
    }
    let indexes = sqlx::query(
        "SELECT tablename::text, indexdef FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for r in indexes {
        out.insert(format!(
            "index {}: {}",
            r.get::<String, _>(0),
            r.get::<String, _>(1)
        ));
    }
    out
}

/// Tables, columns (lower-cased), nullability, primary key position and indexed columns of a
/// SQLite database, in the same words for both databases.
async fn sqlite_shape(url: &str) -> BTreeSet<String> {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut out = BTreeSet::new();
    for t in tables {
        let table = t.to_lowercase();
        let cols = sqlx::query("SELECT name, \"notnull\", pk FROM pragma_table_info(?)")
            .bind(&t)
            .fetch_all(&mut c)
            .await
            .unwrap();
        for r in cols {
            let name: String = r.get("name");
            let notnull: i64 = r.get("notnull");
            let pk: i64 = r.get("pk");
            out.insert(format!(
                "{table}.{} notnull={} pk={pk}",
                name.to_lowercase(),
                notnull == 1 || pk > 0
            ));
        }
        let idx = sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list(?)")
            .bind(&t)
            .fetch_all(&mut c)
            .await
            .unwrap();
        for r in idx {
            let name: String = r.get("name");
            let unique: i64 = r.get("unique");
            let origin: String = r.get("origin");
            if origin == "pk" {
                continue;
            }
            let cols: Vec<String> = sqlx::query_scalar::<_, String>(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno",
            )
            .bind(&name)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.to_lowercase())
            .collect();
            out.insert(format!(
                "{table} index unique={} ({})",
                unique == 1,
                cols.join(", ")
            ));
        }
    }
    out
}

/// The same shape from PostgreSQL's catalogue.
async fn pg_shape(url: &str) -> BTreeSet<String> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut out = BTreeSet::new();
    let cols = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.is_nullable::text, \
         coalesce((SELECT k.ordinal_position::int8 FROM information_schema.table_constraints tc \
           JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name \
           AND k.table_name = tc.table_name \
           WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name \
           AND k.column_name = c.column_name), 0) \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for r in cols {
        let (t, col, nullable, pk): (String, String, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        out.insert(format!("{t}.{col} notnull={} pk={pk}", nullable == "NO"));
    }
    let idx = sqlx::query(
        "SELECT t.relname::text, ix.indisunique, \
         array_to_string(array(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY k(n, o) \
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o), ', ') \
         FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_namespace ns ON ns.oid = t.relnamespace \
         WHERE ns.nspname = 'public' AND NOT ix.indisprimary AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for r in idx {
        let (t, unique, cols): (String, bool, String) = (r.get(0), r.get(1), r.get(2));
        out.insert(format!("{t} index unique={unique} ({cols})"));
    }
    out
}

fn differences(a: &BTreeSet<String>, b: &BTreeSet<String>, an: &str, bn: &str) -> String {
    let only_a: Vec<_> = a.difference(b).collect();
    let only_b: Vec<_> = b.difference(a).collect();
    format!("only in {an}: {only_a:#?}\nonly in {bn}: {only_b:#?}")
}

async fn migrated(backend: Backend, dir: &std::path::Path) -> String {
    let url = new_database(backend, dir).await;
    let store = auditseal_core::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    url
}

#[tokio::test]
async fn the_postgres_scripts_create_what_the_migrations_create() {
    let dir = tempfile::tempdir().unwrap();
    let from_migrations = migrated(Backend::Postgres, dir.path()).await;
    let by_hand = new_database(Backend::Postgres, dir.path()).await;
    let scripts = workspace_root().join("sql-scripts");
    for f in ["create-tables-postgres.sql", "create-index-postgres.sql"] {
        let sql = std::fs::read_to_string(scripts.join(f)).unwrap();
        exec(&by_hand, &sql).await;
    }
    let (a, b) = (pg_schema(&from_migrations).await, pg_schema(&by_hand).await);
    assert!(!a.is_empty());
    assert!(
        a == b,
        "{}",
        differences(&a, &b, "migrations", "sql-scripts")
    );
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_have_the_same_tables_keys_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_shape(&migrated(Backend::Postgres, dir.path()).await).await;
    let lite = sqlite_shape(&migrated(Backend::Sqlite, dir.path()).await).await;
    assert!(
        pg.iter().any(|l| l.contains("auditrecorddata.pk")),
        "{pg:#?}"
    );
    assert!(
        pg == lite,
        "{}",
        differences(&pg, &lite, "PostgreSQL", "SQLite")
    );
}
