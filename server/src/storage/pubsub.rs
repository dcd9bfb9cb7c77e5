//! PEP nodes and items (XEP-0163 on XEP-0060): typed queries for the pubsub module.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/pubsub");

/// A node's configuration as stored (the protocol meaning lives in `pubsub::config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub access_model: String,
    pub max_items: u32,
    pub persist_items: bool,
    pub send_last: String,
    pub roster_groups: Vec<String>,
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    pub id: String,
    /// The serialised payload element.
    pub payload: String,
    pub publisher: String,
}

/// What a publish or create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Done; `created` says whether the node was new.
    Done { created: bool },
    /// The node exists already (create only).
    Exists,
    /// The account has as many nodes as it may.
    TooManyNodes,
}

fn node_from_row(r: &sqlx::sqlite::SqliteRow) -> NodeRow {
    let groups: String = r.get("roster_groups");
    NodeRow {
        access_model: r.get("access_model"),
        max_items: r.get::<i64, _>("max_items").clamp(1, u32::MAX as i64) as u32,
        persist_items: r.get::<i64, _>("persist_items") != 0,
        send_last: r.get("send_last"),
        roster_groups: groups
            .split('\n')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

fn item_from_row(r: &sqlx::sqlite::SqliteRow) -> ItemRow {
    ItemRow {
        id: r.get("item_id"),
        payload: r.get("payload"),
        publisher: r.get("publisher"),
    }
}

/// Items a node keeps: a node that does not persist items keeps only the last.
fn kept(cfg: &NodeRow) -> i64 {
    if cfg.persist_items {
        cfg.max_items as i64
    } else {
        1
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn insert_node(
    tx: &mut Tx,
    username: &str,
    node: &str,
    cfg: &NodeRow,
    max_nodes: usize,
) -> Result<Option<NodeOutcome>, StorageError> {
    let count: i64 = sqlx::query("SELECT count(*) FROM pep_nodes WHERE username = $1")
        .bind(username)
        .fetch_one(&mut **tx)
        .await?
        .get(0);
    if count as usize >= max_nodes {
        return Ok(Some(NodeOutcome::TooManyNodes));
    }
    sqlx::query(
        "INSERT INTO pep_nodes (username, node, access_model, max_items, persist_items, send_last, roster_groups)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(username)
    .bind(node)
    .bind(&cfg.access_model)
    .bind(cfg.max_items as i64)
    .bind(cfg.persist_items as i64)
    .bind(&cfg.send_last)
    .bind(cfg.roster_groups.join("\n"))
    .execute(&mut **tx)
    .await?;
    Ok(None)
}

async fn trim(tx: &mut Tx, username: &str, node: &str, keep: i64) -> Result<(), StorageError> {
    sqlx::query(
        "DELETE FROM pep_items WHERE username = $1 AND node = $2 AND seq NOT IN
           (SELECT seq FROM pep_items WHERE username = $1 AND node = $2 ORDER BY seq DESC LIMIT $3)",
    )
    .bind(username)
    .bind(node)
    .bind(keep)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn node_in(tx: &mut Tx, username: &str, node: &str) -> Result<Option<NodeRow>, StorageError> {
    let row = sqlx::query("SELECT * FROM pep_nodes WHERE username = $1 AND node = $2")
        .bind(username)
        .bind(node)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.as_ref().map(node_from_row))
}

impl Db {
    /// One node's configuration.
    pub async fn pep_node(
        &self,
        username: &str,
        node: &str,
    ) -> Result<Option<NodeRow>, StorageError> {
        let row = sqlx::query("SELECT * FROM pep_nodes WHERE username = $1 AND node = $2")
            .bind(username)
            .bind(node)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(node_from_row))
    }

    /// Every node of an account, by name.
    pub async fn pep_nodes(&self, username: &str) -> Result<Vec<(String, NodeRow)>, StorageError> {
        let rows = sqlx::query("SELECT * FROM pep_nodes WHERE username = $1 ORDER BY node")
            .bind(username)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>("node"), node_from_row(r)))
            .collect())
    }

    /// Create a node (at most `max_nodes` per account).
    pub async fn pep_create(
        &self,
        username: &str,
        node: &str,
        cfg: &NodeRow,
        max_nodes: usize,
    ) -> Result<NodeOutcome, StorageError> {
        let mut tx = self.begin_write().await?;
        if node_in(&mut tx, username, node).await?.is_some() {
            return Ok(NodeOutcome::Exists);
        }
        if let Some(o) = insert_node(&mut tx, username, node, cfg, max_nodes).await? {
            return Ok(o);
        }
        tx.commit().await?;
        Ok(NodeOutcome::Done { created: true })
    }

    /// Replace a node's configuration, dropping the oldest items beyond the
    /// new bound. False if there is no such node.
    pub async fn pep_configure(
        &self,
        username: &str,
        node: &str,
        cfg: &NodeRow,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE pep_nodes SET access_model = $3, max_items = $4, persist_items = $5, send_last = $6,
               roster_groups = $7 WHERE username = $1 AND node = $2",
        )
        .bind(username)
        .bind(node)
        .bind(&cfg.access_model)
        .bind(cfg.max_items as i64)
        .bind(cfg.persist_items as i64)
        .bind(&cfg.send_last)
        .bind(cfg.roster_groups.join("\n"))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        trim(&mut tx, username, node, kept(cfg)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Delete a node and its items. False if there was none.
    pub async fn pep_delete(&self, username: &str, node: &str) -> Result<bool, StorageError> {
        let r = sqlx::query("DELETE FROM pep_nodes WHERE username = $1 AND node = $2")
            .bind(username)
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Publish `item` to `node`, creating the node with `new_cfg` if it does
    /// not exist (at most `max_nodes` per account); an item with the same id
    /// is replaced and becomes the newest; the oldest items beyond the node's
    /// bound are dropped. All in one transaction.
    pub async fn pep_publish(
        &self,
        username: &str,
        node: &str,
        new_cfg: &NodeRow,
        max_nodes: usize,
        item: &ItemRow,
    ) -> Result<NodeOutcome, StorageError> {
        let mut tx = self.begin_write().await?;
        let (cfg, created) = match node_in(&mut tx, username, node).await? {
            Some(cfg) => (cfg, false),
            None => {
                if let Some(o) = insert_node(&mut tx, username, node, new_cfg, max_nodes).await? {
                    return Ok(o);
                }
                (new_cfg.clone(), true)
            }
        };
        sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
            .bind(username)
            .bind(node)
            .bind(&item.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pep_items (username, node, item_id, payload, publisher) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(username)
        .bind(node)
        .bind(&item.id)
        .bind(&item.payload)
        .bind(&item.publisher)
        .execute(&mut *tx)
        .await?;
        trim(&mut tx, username, node, kept(&cfg)).await?;
        tx.commit().await?;
        Ok(NodeOutcome::Done { created })
    }

    /// The newest `limit` items of a node, oldest first, as many as fit in
    /// `max_bytes` of payload (always at least the newest one).
    pub async fn pep_items(
        &self,
        username: &str,
        node: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<ItemRow>, StorageError> {
        // Sizes first, so that a node full of large items is never loaded whole.
        let sizes = sqlx::query(
            "SELECT length(CAST(payload AS BLOB)) FROM pep_items WHERE username = $1 AND node = $2
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(username)
        .bind(node)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(self.pool())
        .await?;
        let mut total = 0usize;
        let mut fit = 0i64;
        for r in &sizes {
            total = total.saturating_add(r.get::<i64, _>(0).max(0) as usize);
            if fit > 0 && total > max_bytes {
                break;
            }
            fit += 1;
        }
        let mut rows = sqlx::query(
            "SELECT item_id, payload, publisher FROM pep_items WHERE username = $1 AND node = $2
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(username)
        .bind(node)
        .bind(fit)
        .fetch_all(self.pool())
        .await?;
        rows.reverse();
        Ok(rows.iter().map(item_from_row).collect())
    }

    /// The items of a node with these ids (missing ones are left out), in
    /// publication order, as many as fit in `max_bytes` of payload.
    pub async fn pep_items_by_id(
        &self,
        username: &str,
        node: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> Result<Vec<ItemRow>, StorageError> {
        let mut out: Vec<(i64, ItemRow)> = Vec::new();
        let mut total = 0usize;
        for id in ids {
            let row = sqlx::query(
                "SELECT seq, item_id, payload, publisher FROM pep_items
                 WHERE username = $1 AND node = $2 AND item_id = $3",
            )
            .bind(username)
            .bind(node)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(r) = row {
                if !out.iter().any(|(_, i)| i.id == *id) {
                    let item = item_from_row(&r);
                    total = total.saturating_add(item.payload.len());
                    if !out.is_empty() && total > max_bytes {
                        break;
                    }
                    out.push((r.get("seq"), item));
                }
            }
        }
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, i)| i).collect())
    }

    /// Remove every item of a node (the node stays).
    pub async fn pep_purge(&self, username: &str, node: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2")
            .bind(username)
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Remove one item. False if there was none.
    pub async fn pep_retract(
        &self,
        username: &str,
        node: &str,
        id: &str,
    ) -> Result<bool, StorageError> {
        let r =
            sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
                .bind(username)
                .bind(node)
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Add an explicit subscription of `jid` to a node (at most `max` per
    /// node). `Ok(false)` when the node has as many as it may.
    pub async fn pep_subscribe(
        &self,
        username: &str,
        node: &str,
        jid: &str,
        max: usize,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let count: i64 =
            sqlx::query("SELECT count(*) FROM pep_subscriptions WHERE username = $1 AND node = $2")
                .bind(username)
                .bind(node)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        let exists = sqlx::query(
            "SELECT 1 FROM pep_subscriptions WHERE username = $1 AND node = $2 AND jid = $3",
        )
        .bind(username)
        .bind(node)
        .bind(jid)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if exists {
            return Ok(true);
        }
        if count as usize >= max {
            return Ok(false);
        }
        sqlx::query("INSERT INTO pep_subscriptions (username, node, jid) VALUES ($1, $2, $3)")
            .bind(username)
            .bind(node)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Remove an explicit subscription. False if there was none.
    pub async fn pep_unsubscribe(
        &self,
        username: &str,
        node: &str,
        jid: &str,
    ) -> Result<bool, StorageError> {
        let r = sqlx::query(
            "DELETE FROM pep_subscriptions WHERE username = $1 AND node = $2 AND jid = $3",
        )
        .bind(username)
        .bind(node)
        .bind(jid)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The JIDs explicitly subscribed to a node.
    pub async fn pep_subscribers(
        &self,
        username: &str,
        node: &str,
    ) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query(
            "SELECT jid FROM pep_subscriptions WHERE username = $1 AND node = $2 ORDER BY jid",
        )
        .bind(username)
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
