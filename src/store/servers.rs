//! What was learned about each server: the token encoding it accepts, the
//! optional endpoints it lacks, the body size it refuses. Kept so that a
//! restart does not pay for the lesson again.

use std::time::SystemTime;

use sqlx::Row as _;

use super::{Error, Store, to_millis};
use crate::blossom::{ServerUrl, TokenEncoding};

/// Everything recorded about one server; the default for a server never
/// seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerTraits {
    /// The token encoding it last accepted.
    pub token_encoding: Option<TokenEncoding>,
    /// It answered `/mirror` as not implemented.
    pub mirror_unsupported: bool,
    /// It answered `HEAD /upload` as not implemented, or not at all.
    pub preflight_unsupported: bool,
    /// The smallest body it refused as too large.
    pub refused_size: Option<u64>,
    /// It refused an upload token that covers several blobs.
    pub batch_tokens_refused: bool,
}

impl Store {
    /// What was learned about a server.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn server_traits(&self, server: &ServerUrl) -> Result<ServerTraits, Error> {
        let row = sqlx::query(
            "SELECT token_encoding, mirror_unsupported, preflight_unsupported, refused_size,
                    batch_tokens_refused
             FROM servers WHERE url = ?",
        )
        .bind(server.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(row.map_or_else(ServerTraits::default, |row| ServerTraits {
            token_encoding: row
                .get::<Option<String>, _>("token_encoding")
                .as_deref()
                .and_then(TokenEncoding::from_name),
            mirror_unsupported: row.get::<i64, _>("mirror_unsupported") != 0,
            preflight_unsupported: row.get::<i64, _>("preflight_unsupported") != 0,
            refused_size: row.get::<Option<i64>, _>("refused_size").map(|s| s as u64),
            batch_tokens_refused: row.get::<i64, _>("batch_tokens_refused") != 0,
        }))
    }

    /// Remembers the token encoding a server accepted.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_token_encoding(
        &self,
        server: &ServerUrl,
        encoding: TokenEncoding,
    ) -> Result<(), Error> {
        self.learn(
            server,
            "UPDATE servers SET token_encoding = ?2 WHERE url = ?1",
            Value::Text(encoding.as_str()),
        )
        .await
    }

    /// Remembers that a server does not implement `/mirror`, so later blobs
    /// go straight to upload.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_mirror_unsupported(&self, server: &ServerUrl) -> Result<(), Error> {
        self.learn(server, "UPDATE servers SET mirror_unsupported = 1 WHERE url = ?1", Value::None)
            .await
    }

    /// Remembers that a server does not implement `HEAD /upload`, so later
    /// uploads skip the preflight.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_preflight_unsupported(&self, server: &ServerUrl) -> Result<(), Error> {
        self.learn(
            server,
            "UPDATE servers SET preflight_unsupported = 1 WHERE url = ?1",
            Value::None,
        )
        .await
    }

    /// Remembers that a server refused an upload token covering several
    /// blobs, so later runs sign one per request.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_batch_tokens_refused(&self, server: &ServerUrl) -> Result<(), Error> {
        self.learn(
            server,
            "UPDATE servers SET batch_tokens_refused = 1 WHERE url = ?1",
            Value::None,
        )
        .await
    }

    /// Remembers that a server refused a body of `size` bytes as too large;
    /// the smallest such size is kept.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_refused_size(&self, server: &ServerUrl, size: u64) -> Result<(), Error> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        const SQL: &str = "UPDATE servers SET refused_size = min(coalesce(refused_size, ?2), ?2)
                           WHERE url = ?1";
        self.learn(server, SQL, Value::Int(size)).await
    }

    /// Makes sure the server has a row, then runs `update` on it (`?1` is
    /// the URL, `?2` the value) in the same transaction.
    async fn learn(
        &self,
        server: &ServerUrl,
        update: &'static str,
        value: Value,
    ) -> Result<(), Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO servers (url, updated_at) VALUES (?1, ?2)
             ON CONFLICT (url) DO UPDATE SET updated_at = ?2",
        )
        .bind(server.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        let query = sqlx::query(update).bind(server.as_str());
        let query = match value {
            Value::None => query,
            Value::Int(n) => query.bind(n),
            Value::Text(t) => query.bind(t),
        };
        query.execute(&mut *tx).await.map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
    }
}

/// The value an assignment in [`Store::learn`] binds as `?2`.
enum Value {
    None,
    Int(i64),
    Text(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[tokio::test]
    async fn what_is_learned_is_kept_and_the_smallest_refused_size_wins() {
        let (store, _dir) = temp_store().await;
        let server = ServerUrl::parse("https://cdn.example.com").unwrap();
        assert_eq!(store.server_traits(&server).await.unwrap(), ServerTraits::default());
        store.set_token_encoding(&server, TokenEncoding::Base64Url).await.unwrap();
        store.set_preflight_unsupported(&server).await.unwrap();
        store.set_refused_size(&server, 5_000_000).await.unwrap();
        store.set_refused_size(&server, 9_000_000).await.unwrap();
        store.set_refused_size(&server, 3_000_000).await.unwrap();
        let traits = store.server_traits(&server).await.unwrap();
        assert_eq!(
            traits,
            ServerTraits {
                token_encoding: Some(TokenEncoding::Base64Url),
                mirror_unsupported: false,
                preflight_unsupported: true,
                refused_size: Some(3_000_000),
                batch_tokens_refused: false,
            }
        );
        store.set_mirror_unsupported(&server).await.unwrap();
        store.set_batch_tokens_refused(&server).await.unwrap();
        let traits = store.server_traits(&server).await.unwrap();
        assert!(traits.mirror_unsupported && traits.batch_tokens_refused);
    }
}
