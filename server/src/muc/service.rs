//! The group chat service's state: the rooms (persistent ones loaded from
//! storage on first use), each behind its own lock so that one room's
//! stanzas are handled in order while rooms run in parallel; which rooms
//! each session is in (to leave them when it ends); and the join rate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jid::{BareJid, FullJid};
use tokio::sync::{Mutex as RoomLock, OnceCell};

use super::room::Room;
use crate::core::Core;
use crate::storage::StorageError;

/// A room behind its lock.
pub type RoomRef = Arc<RoomLock<Room>>;

/// The service state (kept in the core).
#[derive(Default)]
pub struct Muc {
    rooms: OnceCell<Mutex<HashMap<String, RoomRef>>>,
    /// The occupant-id key (XEP-0421), set when the rooms are loaded.
    key: std::sync::OnceLock<ring::hmac::Key>,
    /// Full JID → rooms its session is in.
    joined: Mutex<HashMap<FullJid, HashSet<String>>>,
    /// Account → (window start, joins in it).
    joins: Mutex<HashMap<BareJid, (Instant, u32)>>,
}

impl std::fmt::Debug for Muc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Muc")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Muc {
    /// The room table, loading persistent rooms on first use.
    async fn table(&self, core: &Core) -> Result<&Mutex<HashMap<String, RoomRef>>, StorageError> {
        self.rooms
            .get_or_try_init(|| async {
                let key = super::occupant_id::load_key(core).await?;
                let _ = self.key.set(key);
                let mut map = HashMap::new();
                for stored in core.db.muc_rooms().await? {
                    let affs = core.db.muc_affiliations(&stored.name).await?;
                    let name = stored.name.clone();
                    let Ok(jid) = BareJid::new(&format!("{name}@{}", super::domain(core))) else {
                        continue;
                    };
                    if let Some(mut room) = Room::load(stored, affs, jid) {
                        super::history::restore(core, &mut room).await;
                        super::avatar::restore(core, &mut room).await;
                        map.insert(name, Arc::new(RoomLock::new(room)));
                    }
                }
                super::archive::drop_orphans(core, |n| map.contains_key(n)).await;
                tracing::info!(rooms = map.len(), "group chats loaded");
                Ok(Mutex::new(map))
            })
            .await
    }

    /// The occupant-id key. Rooms are only reached through the table, which
    /// sets it first; a stand-in key is used should that ever not hold.
    pub fn key(&self) -> &ring::hmac::Key {
        self.key.get_or_init(|| {
            ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                crate::core::random_hex(32).as_bytes(),
            )
        })
    }

    /// The room `name`, if it exists.
    pub async fn get(&self, core: &Core, name: &str) -> Result<Option<RoomRef>, StorageError> {
        Ok(lock(self.table(core).await?).get(name).cloned())
    }

    /// Every room.
    pub async fn all(&self, core: &Core) -> Result<Vec<RoomRef>, StorageError> {
        Ok(lock(self.table(core).await?).values().cloned().collect())
    }

    /// Insert a new room unless one with that name appeared meanwhile;
    /// returns the room now under that name.
    pub async fn insert(&self, core: &Core, room: Room) -> Result<RoomRef, StorageError> {
        let mut t = lock(self.table(core).await?);
        Ok(t.entry(room.name.clone())
            .or_insert_with(|| Arc::new(RoomLock::new(room)))
            .clone())
    }

    /// Number of rooms.
    pub async fn count(&self, core: &Core) -> Result<usize, StorageError> {
        Ok(lock(self.table(core).await?).len())
    }

    /// Forget a room (it was destroyed, or emptied and not persistent).
    pub async fn remove(&self, core: &Core, name: &str) {
        if let Ok(t) = self.table(core).await {
            lock(t).remove(name);
        }
    }

    /// Record that `jid` is (or no longer is) in room `name`.
    pub fn mark(&self, jid: &FullJid, name: &str, inside: bool) {
        let mut j = lock(&self.joined);
        if inside {
            j.entry(jid.clone()).or_default().insert(name.to_string());
        } else if let Some(set) = j.get_mut(jid) {
            set.remove(name);
            if set.is_empty() {
                j.remove(jid);
            }
        }
    }

    /// The rooms a session is in (and forget them).
    pub fn take_joined(&self, jid: &FullJid) -> Vec<String> {
        lock(&self.joined)
            .remove(jid)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Count a join by `bare`; false when it is over `per_minute`.
    pub fn join_allowed(&self, bare: &BareJid, per_minute: u32) -> bool {
        let mut joins = lock(&self.joins);
        let now = Instant::now();
        if joins.len() > 10_000 {
            joins.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let e = joins.entry(bare.clone()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= per_minute
    }

    /// Rooms `bare` owns.
    pub async fn owned_by(&self, core: &Core, bare: &BareJid) -> usize {
        let Ok(rooms) = self.all(core).await else {
            return 0;
        };
        let mut n = 0;
        for r in rooms {
            let r = r.lock().await;
            if r.affiliation(bare) == super::room::Affiliation::Owner {
                n += 1;
            }
        }
        n
    }
}
