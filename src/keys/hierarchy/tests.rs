//! Tests of the hierarchy over a real SQLite store and local keyring:
//! coalesced unwraps, erasure, changes from another process, and wrapped
//! keys bound to their rows.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::keys::master::keyring::LocalKeyring;
use crate::keys::master::MasterKeyError;
use crate::keys::store::{Invalidation, SqliteKeyStore};

/// Counts calls through to a real local keyring.
struct Counting {
    inner: LocalKeyring,
    unwraps: AtomicUsize,
}

#[async_trait]
impl MasterKeyProvider for Counting {
    fn kind(&self) -> crate::keys::master::ProviderKind {
        crate::keys::master::ProviderKind::Local
    }

    async fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError> {
        self.inner.destroy_all()
    }

    fn current_version(&self) -> u32 {
        self.inner.current_version()
    }
    fn versions(&self) -> Vec<u32> {
        self.inner.versions()
    }
    async fn refresh(&self) -> Result<(), MasterKeyError> {
        MasterKeyProvider::refresh(&self.inner).await
    }
    async fn add_version(&self, version: u32) -> Result<(), MasterKeyError> {
        self.inner.add_version(version)
    }
    async fn retire_version(&self, version: u32) -> Result<(), MasterKeyError> {
        self.inner.retire_version(version)
    }
    async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError> {
        self.inner.wrap_kek(kek, aad).await
    }
    async fn unwrap_kek(
        &self,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Kek, MasterKeyError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        // Widen the window in which concurrent misses overlap.
        tokio::task::yield_now().await;
        self.inner.unwrap_kek(version, wrapped, aad).await
    }
}

async fn hierarchy(dir: &std::path::Path) -> (Arc<KeyHierarchy>, Arc<Counting>) {
    hierarchy_with_ttl(dir, Duration::from_secs(60)).await
}

/// A hierarchy whose user keys live `user_ttl` in the cache; a second one
/// over the same directory is another process on the same store.
async fn hierarchy_with_ttl(
    dir: &std::path::Path,
    user_ttl: Duration,
) -> (Arc<KeyHierarchy>, Arc<Counting>) {
    let (keyring, naming) = LocalKeyring::create(&dir.join("keyring")).unwrap();
    let master = Arc::new(Counting {
        inner: keyring,
        unwraps: AtomicUsize::new(0),
    });
    let store = Arc::new(SqliteKeyStore::open(&dir.join("keys.db")).await.unwrap());
    let policy = CachePolicy {
        user_ttl,
        kek_ttl: Duration::from_secs(3600),
        max_users: 1000,
    };
    (
        Arc::new(KeyHierarchy::new(
            store,
            master.clone(),
            naming,
            16,
            &policy,
        )),
        master,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_unwrap_once_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = {
        let (keys, _) = hierarchy(dir.path()).await;
        let p = keys.pseudonym("alice").unwrap();
        let (version, _) = keys.active_user_key(&p).await.unwrap();
        assert_eq!(version, 1);
        p
    };
    // A fresh process: cold caches, same store and keyring.
    let (keys, master) = hierarchy(dir.path()).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.user_key(&p, 1).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        master.unwraps.load(Ordering::SeqCst),
        1,
        "one KEK unwrap for 32 concurrent misses"
    );
    assert!(matches!(
        keys.user_key(&p, 2).await,
        Err(KeyError::MissingUserKeyVersion(2))
    ));
}

#[tokio::test]
async fn erasure_invalidates_cached_keys_and_blocks_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = hierarchy(dir.path()).await;
    let p = keys.pseudonym("bob").unwrap();
    let other = keys.pseudonym("carol").unwrap();
    keys.active_user_key(&p).await.unwrap();
    keys.active_user_key(&other).await.unwrap();
    keys.user_key(&p, 1).await.unwrap(); // cached now
    let receipt = keys.erase(&p, "test").await.unwrap();
    assert_eq!(receipt.destroyed_versions, vec![1]);
    assert!(matches!(
        keys.user_key(&p, 1).await,
        Err(KeyError::UserErased)
    ));
    assert!(matches!(
        keys.active_user_key(&p).await,
        Err(KeyError::UserErased)
    ));
    assert_eq!(
        keys.erase(&p, "test").await.unwrap(),
        receipt,
        "erasure is idempotent"
    );
    assert!(keys.store().user_keys(&p).await.unwrap().is_empty());
    keys.user_key(&other, 1).await.unwrap();

    // Another process with cold caches sees the same.
    let (fresh, _) = hierarchy(dir.path()).await;
    assert!(matches!(
        fresh.user_key(&p, 1).await,
        Err(KeyError::UserErased)
    ));
    assert!(matches!(
        fresh.active_user_key(&p).await,
        Err(KeyError::UserErased)
    ));
}

/// Two processes on one key store: what another process changed
/// reaches this one's cache only through [`KeyHierarchy::apply`] (or
/// the cache lifetime).
#[tokio::test]
async fn changes_from_another_process_apply_to_caches_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (a, master_a) = hierarchy(dir.path()).await;
    let (b, _) = hierarchy(dir.path()).await;
    let bob = a.pseudonym("bob").unwrap();
    let carol = a.pseudonym("carol").unwrap();
    a.active_user_key(&bob).await.unwrap();
    a.active_user_key(&carol).await.unwrap();
    let mut bob_stream = a.watch(&bob).await;
    let mut carol_stream = a.watch(&carol).await;

    b.erase(&bob, "test").await.unwrap();
    assert_eq!(b.rotate_user_key(&carol, "test").await.unwrap(), 2);
    // Without a notice, A still serves what it cached.
    a.user_key(&bob, 1).await.unwrap();
    assert_eq!(a.active_user_key(&carol).await.unwrap().0, 1);
    a.check_watch(&mut bob_stream).await.unwrap();

    a.apply(Invalidation::User(bob)).await;
    a.apply(Invalidation::User(carol)).await;
    assert!(matches!(
        a.user_key(&bob, 1).await,
        Err(KeyError::UserErased)
    ));
    assert!(matches!(
        a.check_watch(&mut bob_stream).await,
        Err(KeyError::UserErased)
    ));
    // A rotation is not an erasure: carol's stream goes on, and new
    // writes use her new version.
    a.check_watch(&mut carol_stream).await.unwrap();
    assert_eq!(a.active_user_key(&carol).await.unwrap().0, 2);

    // A notice that anything may have changed: streams ask the store.
    let dave = a.pseudonym("dave").unwrap();
    a.active_user_key(&dave).await.unwrap();
    let mut dave_stream = a.watch(&dave).await;
    let mut carol_stream = a.watch(&carol).await;
    b.erase(&dave, "test").await.unwrap();
    a.apply(Invalidation::All).await;
    assert!(matches!(
        a.check_watch(&mut dave_stream).await,
        Err(KeyError::UserErased)
    ));
    a.check_watch(&mut carol_stream).await.unwrap();
    assert!(matches!(
        a.user_key(&dave, 1).await,
        Err(KeyError::UserErased)
    ));

    // A shard's notice drops its cached KEKs: the next cold user of the
    // shard unwraps the KEK again; other shards stay cached.
    let unwraps = master_a.unwraps.load(Ordering::SeqCst);
    let shard = carol.shard(16);
    a.apply(Invalidation::Shard(shard)).await;
    a.users.invalidate_all();
    a.user_key(&carol, 2).await.unwrap();
    assert_eq!(master_a.unwraps.load(Ordering::SeqCst), unwraps + 1);
}

/// Another process's erasure whose notice never arrives (a listener that
/// hears nothing and notices nothing): an open stream still asks the store
/// once `cache.ttl_seconds` passed since it was last asked for the user
/// (here by the load of the cached key the stream started from), and not
/// at every piece before that.
#[tokio::test]
async fn a_stream_asks_the_store_once_per_cache_lifetime_without_notices() {
    const TTL: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = hierarchy_with_ttl(dir.path(), TTL).await;
    let (b, _) = hierarchy_with_ttl(dir.path(), TTL).await;
    let erin = a.pseudonym("erin").unwrap();
    let before_load = std::time::Instant::now();
    a.active_user_key(&erin).await.unwrap();
    let loaded = std::time::Instant::now();
    // Ages the cached key (well within its lifetime) before the stream.
    tokio::time::sleep(TTL / 4).await;
    let mut stream = a.watch(&erin).await;
    b.erase(&erin, "test").await.unwrap();
    let erased = std::time::Instant::now();
    loop {
        let checked = std::time::Instant::now();
        match a.check_watch(&mut stream).await {
            Ok(()) => assert!(
                checked < loaded + TTL,
                "a check {:?} after the erasure, and a cache lifetime after the key was loaded, let a piece go",
                checked - erased
            ),
            Err(KeyError::UserErased) => {
                assert!(
                    checked >= before_load + TTL,
                    "the store was asked before it was due"
                );
                break;
            }
            Err(e) => panic!("{e}"),
        }
        // Paces the stream's pieces; the loop polls the check.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// While the feed of other processes' changes is interrupted, every check
/// asks the store, so an erasure during the outage ends a stream at its
/// next piece; once the feed listens again, checks are one atomic load.
#[tokio::test]
async fn while_the_feed_is_interrupted_every_check_asks_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = hierarchy(dir.path()).await;
    let (b, _) = hierarchy(dir.path()).await;
    let fay = a.pseudonym("fay").unwrap();
    let gus = a.pseudonym("gus").unwrap();
    a.active_user_key(&fay).await.unwrap();
    a.active_user_key(&gus).await.unwrap();
    let mut fay_stream = a.watch(&fay).await;
    let mut gus_stream = a.watch(&gus).await;

    a.apply(Invalidation::Interrupted).await;
    a.check_watch(&mut fay_stream).await.unwrap();
    a.check_watch(&mut gus_stream).await.unwrap();
    // Erased during the outage: no notice will ever say so.
    b.erase(&fay, "test").await.unwrap();
    assert!(matches!(
        a.check_watch(&mut fay_stream).await,
        Err(KeyError::UserErased)
    ));

    // Listening again: the next check asks the store (what was missed),
    // then checks are cheap again, and a lost notice waits for the cache
    // lifetime (60 s here).
    a.apply(Invalidation::All).await;
    a.check_watch(&mut gus_stream).await.unwrap();
    b.erase(&gus, "test").await.unwrap();
    a.check_watch(&mut gus_stream).await.unwrap();
}

#[tokio::test]
async fn wrapped_keys_are_bound_to_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, _) = hierarchy(dir.path()).await;
    let a = keys.pseudonym("a").unwrap();
    let b = keys.pseudonym("b").unwrap();
    keys.active_user_key(&a).await.unwrap();
    let mut row = keys.store().user_keys(&a).await.unwrap().remove(0);
    // Move a's wrapped key under b's pseudonym: the AAD no longer matches.
    row.pseudonym = b;
    row.shard = b.shard(16);
    keys.store().insert_user_key(&row).await.unwrap();
    let (fresh, _) = hierarchy(dir.path()).await;
    assert!(matches!(
        fresh.user_key(&b, 1).await,
        Err(KeyError::Unwrap(_) | KeyError::Internal(_) | KeyError::KekMissing { .. })
    ));
}
