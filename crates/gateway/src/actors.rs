//! The actor store: who may call the gateway, each with a gateway-issued Kling-style key pair.
//!
//! Actors sign Kling JWTs (HS256) with their own secret key, so an unmodified Kling SDK works
//! against the gateway. Verifying HS256 needs the secret itself, so the store keeps it: the
//! file (`<keys dir>/actors.json` by default) is written with mode 0600, atomically (temporary
//! file, fsync, rename), beside the ledger's keys and never inside the ledger directory. The
//! running gateway re-reads the file when its modification time or length changes, so
//! `kling-audit actors disable` takes effect without a restart.
//!
//! Two `actors add` commands racing on one file can lose one of the additions (last rename
//! wins); the store takes no lock because it is edited by an operator, one command at a time.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kling_api::SecretString;
use rand::distributions::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The store's format version.
pub const STORE_VERSION: u32 = 1;
/// Length of generated access keys.
pub const ACCESS_KEY_LEN: usize = 32;
/// Length of generated secret keys (about 285 bits of entropy).
pub const SECRET_KEY_LEN: usize = 48;
/// Longest actor name.
pub const MAX_NAME_LEN: usize = 64;
/// The actor of records about callers the gateway could not attribute to an actor.
pub const UNAUTHENTICATED_ACTOR: &str = "unauthenticated";

/// Why an actor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The store could not be read or written.
    #[error("actor store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The store is not valid JSON of the expected shape.
    #[error("actor store {path} is damaged: {reason}; restore it from a backup")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        reason: String,
    },
    /// The store was written by a newer version.
    #[error("actor store {path} has version {found}; this build reads version {STORE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// A name breaks the naming rule.
    #[error("actor name {name:?} is not allowed: {rule}")]
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The name is taken.
    #[error("an actor named {name:?} already exists; pick another name")]
    Exists {
        /// The name given.
        name: String,
    },
    /// No actor has this name.
    #[error("no actor named {name:?}; `kling-audit actors list` shows the names")]
    NotFound {
        /// The name given.
        name: String,
    },
}

/// One actor as stored. The secret key is here because HS256 verification needs it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredActor {
    /// The actor name recorded as `actor` in every record of its requests.
    pub name: String,
    /// The JWT `iss` the actor signs with.
    pub access_key: String,
    /// The HMAC key of the actor's JWTs.
    pub secret_key: String,
    /// When the actor was created, Unix seconds.
    pub created_unix: u64,
    /// Disabled actors are refused with 401.
    #[serde(default)]
    pub disabled: bool,
    /// When the actor was disabled, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_unix: Option<u64>,
    /// When the actor's keys were last replaced, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_unix: Option<u64>,
}

impl std::fmt::Debug for StoredActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredActor")
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    actors: Vec<StoredActor>,
}

/// A newly created actor's credentials, shown once.
#[derive(Debug, Clone)]
pub struct NewActor {
    /// The actor name.
    pub name: String,
    /// The access key (JWT `iss`).
    pub access_key: String,
    /// The secret key; show it to the operator once.
    pub secret_key: SecretString,
}

/// What `actors list` shows: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorInfo {
    /// The actor name.
    pub name: String,
    /// The access key.
    pub access_key: String,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// Whether the actor is refused.
    pub disabled: bool,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks an actor name: 1 to 64 characters of letters, digits, `.`, `_`, `-`, `@`; it is
/// written as the `actor` of records, so it must be printable and unambiguous.
///
/// # Errors
/// [`ActorError::BadName`].
pub fn check_name(name: &str) -> Result<(), ActorError> {
    let bad = |rule| {
        Err(ActorError::BadName {
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("use 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        return bad("use letters, digits, '.', '_', '-' and '@' only");
    }
    if name.starts_with("kf_") || name.starts_with("gateway") {
        return bad("names starting with kf_ or gateway are reserved for the gateway itself");
    }
    // The actor of refusals of unknown callers: an actor of that name would be
    // indistinguishable from them in the ledger.
    if name == UNAUTHENTICATED_ACTOR {
        return bad("the name unauthenticated is reserved for callers the gateway refused");
    }
    Ok(())
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn read_store(path: &Path) -> Result<StoreFile, ActorError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StoreFile {
                version: STORE_VERSION,
                actors: Vec::new(),
            })
        }
        Err(source) => {
            return Err(ActorError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let store: StoreFile = serde_json::from_slice(&bytes).map_err(|e| ActorError::Damaged {
        path: path.to_path_buf(),
        // serde's message names the position; it never echoes whole values.
        reason: e.to_string(),
    })?;
    if store.version != STORE_VERSION {
        return Err(ActorError::Version {
            path: path.to_path_buf(),
            found: store.version,
        });
    }
    Ok(store)
}

fn write_store(path: &Path, store: &StoreFile) -> Result<(), ActorError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ActorError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
    }
    let bytes = serde_json::to_vec_pretty(store).map_err(|e| ActorError::Damaged {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or("actors.json".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(())
}

/// Creates an actor with fresh keys and saves the store.
///
/// # Errors
/// A bad or taken name, or a store that cannot be read or written.
pub fn add(path: &Path, name: &str) -> Result<NewActor, ActorError> {
    check_name(name)?;
    let mut store = read_store(path)?;
    if store.actors.iter().any(|a| a.name == name) {
        return Err(ActorError::Exists {
            name: name.to_owned(),
        });
    }
    let access_key = fresh_access_key(&store);
    let secret_key = random_text(SECRET_KEY_LEN);
    store.actors.push(StoredActor {
        name: name.to_owned(),
        access_key: access_key.clone(),
        secret_key: secret_key.clone(),
        created_unix: now_unix(),
        disabled: false,
        disabled_unix: None,
        rotated_unix: None,
    });
    write_store(path, &store)?;
    Ok(NewActor {
        name: name.to_owned(),
        access_key,
        secret_key: SecretString::new(secret_key),
    })
}

/// Every actor, without secrets, in creation order.
///
/// # Errors
/// A store that cannot be read.
pub fn list(path: &Path) -> Result<Vec<ActorInfo>, ActorError> {
    Ok(read_store(path)?
        .actors
        .into_iter()
        .map(|a| ActorInfo {
            name: a.name,
            access_key: a.access_key,
            created_unix: a.created_unix,
            disabled: a.disabled,
        })
        .collect())
}

/// Disables an actor; its tokens are refused from the gateway's next reload on. Returns
/// `false` when it was already disabled.
///
/// # Errors
/// An unknown name, or a store that cannot be read or written.
pub fn disable(path: &Path, name: &str) -> Result<bool, ActorError> {
    let mut store = read_store(path)?;
    let actor = find_mut(&mut store, name)?;
    if actor.disabled {
        return Ok(false);
    }
    actor.disabled = true;
    actor.disabled_unix = Some(now_unix());
    write_store(path, &store)?;
    Ok(true)
}

/// Enables a disabled actor; its tokens are accepted from the gateway's next reload on.
/// Returns `false` when it was not disabled.
///
/// # Errors
/// An unknown name, or a store that cannot be read or written.
pub fn enable(path: &Path, name: &str) -> Result<bool, ActorError> {
    let mut store = read_store(path)?;
    let actor = find_mut(&mut store, name)?;
    if !actor.disabled {
        return Ok(false);
    }
    actor.disabled = false;
    actor.disabled_unix = None;
    write_store(path, &store)?;
    Ok(true)
}

/// Gives an actor a new access key and secret key, under the same name; tokens signed with
/// the old ones are refused from the gateway's next reload on. Whether the actor is disabled
/// does not change.
///
/// # Errors
/// An unknown name, or a store that cannot be read or written.
pub fn rotate(path: &Path, name: &str) -> Result<NewActor, ActorError> {
    let mut store = read_store(path)?;
    let access_key = fresh_access_key(&store);
    let secret_key = random_text(SECRET_KEY_LEN);
    let actor = find_mut(&mut store, name)?;
    actor.access_key = access_key.clone();
    actor.secret_key = secret_key.clone();
    actor.rotated_unix = Some(now_unix());
    write_store(path, &store)?;
    Ok(NewActor {
        name: name.to_owned(),
        access_key,
        secret_key: SecretString::new(secret_key),
    })
}

fn find_mut<'a>(store: &'a mut StoreFile, name: &str) -> Result<&'a mut StoredActor, ActorError> {
    store
        .actors
        .iter_mut()
        .find(|a| a.name == name)
        .ok_or_else(|| ActorError::NotFound {
            name: name.to_owned(),
        })
}

/// An access key no actor of `store` has.
fn fresh_access_key(store: &StoreFile) -> String {
    loop {
        let candidate = random_text(ACCESS_KEY_LEN);
        if !store.actors.iter().any(|a| a.access_key == candidate) {
            break candidate;
        }
    }
}

/// A verified caller's identity as the gateway sees it.
#[derive(Clone)]
pub struct ActorKey {
    /// The actor name.
    pub name: String,
    /// The secret for HS256 verification.
    pub secret_key: SecretString,
    /// Whether requests are refused.
    pub disabled: bool,
}

/// The store indexed by access key, as the request path uses it.
#[derive(Default)]
pub struct ActorIndex {
    by_access_key: HashMap<String, ActorKey>,
}

impl ActorIndex {
    /// Loads the store at `path` (a missing file is an empty store).
    ///
    /// # Errors
    /// A store that cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ActorError> {
        let store = read_store(path)?;
        let by_access_key = store
            .actors
            .into_iter()
            .map(|a| {
                (
                    a.access_key,
                    ActorKey {
                        name: a.name,
                        secret_key: SecretString::new(a.secret_key),
                        disabled: a.disabled,
                    },
                )
            })
            .collect();
        Ok(Self { by_access_key })
    }

    /// The actor holding `access_key`.
    pub fn get(&self, access_key: &str) -> Option<&ActorKey> {
        self.by_access_key.get(access_key)
    }

    /// Number of actors, disabled ones included.
    pub fn len(&self) -> usize {
        self.by_access_key.len()
    }

    /// Whether the store has no actor.
    pub fn is_empty(&self) -> bool {
        self.by_access_key.is_empty()
    }
}

/// Modification time and length: when either changes, the gateway reloads the store.
pub fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn add_list_disable_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("actors.json");
        let alice = add(&path, "alice").unwrap();
        assert_eq!(alice.access_key.len(), ACCESS_KEY_LEN);
        assert_eq!(alice.secret_key.expose().len(), SECRET_KEY_LEN);
        let bob = add(&path, "bob@team").unwrap();
        assert_ne!(alice.access_key, bob.access_key);
        assert!(matches!(
            add(&path, "alice"),
            Err(ActorError::Exists { .. })
        ));

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let names: Vec<_> = list(&path).unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["alice", "bob@team"]);

        let index = ActorIndex::load(&path).unwrap();
        let a = index.get(&alice.access_key).unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.secret_key.expose(), alice.secret_key.expose());
        assert!(!a.disabled);

        assert!(disable(&path, "alice").unwrap());
        assert!(!disable(&path, "alice").unwrap());
        assert!(matches!(
            disable(&path, "carol"),
            Err(ActorError::NotFound { .. })
        ));
        let index = ActorIndex::load(&path).unwrap();
        assert!(index.get(&alice.access_key).unwrap().disabled);
        assert!(!index.get(&bob.access_key).unwrap().disabled);
    }

    #[test]
    fn a_disabled_actor_is_enabled_again_and_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actors.json");
        let alice = add(&path, "alice").unwrap();
        assert!(!enable(&path, "alice").unwrap(), "not disabled");
        assert!(disable(&path, "alice").unwrap());
        assert!(enable(&path, "alice").unwrap());
        let index = ActorIndex::load(&path).unwrap();
        let a = index.get(&alice.access_key).unwrap();
        assert!(!a.disabled);
        assert_eq!(a.secret_key.expose(), alice.secret_key.expose());
        assert!(matches!(
            enable(&path, "carol"),
            Err(ActorError::NotFound { .. })
        ));
    }

    #[test]
    fn a_rotated_actor_keeps_its_name_and_state_and_only_its_new_keys_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actors.json");
        let alice = add(&path, "alice").unwrap();
        let bob = add(&path, "bob").unwrap();
        assert!(disable(&path, "bob").unwrap());
        let new_alice = rotate(&path, "alice").unwrap();
        let new_bob = rotate(&path, "bob").unwrap();
        assert_eq!(new_alice.name, "alice");
        assert_ne!(new_alice.access_key, alice.access_key);
        assert_ne!(new_alice.secret_key.expose(), alice.secret_key.expose());
        let index = ActorIndex::load(&path).unwrap();
        assert!(index.get(&alice.access_key).is_none(), "old key gone");
        assert!(index.get(&bob.access_key).is_none(), "old key gone");
        let a = index.get(&new_alice.access_key).unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.secret_key.expose(), new_alice.secret_key.expose());
        assert!(!a.disabled);
        assert!(
            index.get(&new_bob.access_key).unwrap().disabled,
            "still disabled"
        );
        let names: Vec<_> = list(&path).unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(matches!(
            rotate(&path, "carol"),
            Err(ActorError::NotFound { .. })
        ));
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "has space",
            "tab\t",
            "gateway-x",
            "kf_123",
            &"x".repeat(65),
            "ü",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "svc.render-1", "bob@team_2"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn the_actor_name_of_refused_callers_is_reserved() {
        assert!(matches!(
            check_name("unauthenticated"),
            Err(ActorError::BadName { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(add(&dir.path().join("actors.json"), "unauthenticated").is_err());
    }

    #[test]
    fn damaged_or_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actors.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            ActorIndex::load(&path),
            Err(ActorError::Damaged { .. })
        ));
        fs::write(&path, br#"{"version":9,"actors":[]}"#).unwrap();
        assert!(matches!(
            list(&path),
            Err(ActorError::Version { found: 9, .. })
        ));
        assert!(ActorIndex::load(&dir.path().join("missing.json"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn debug_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actors.json");
        let a = add(&path, "alice").unwrap();
        assert!(!format!("{a:?}").contains(a.secret_key.expose()));
        let stored = read_store(&path).unwrap();
        assert!(!format!("{:?}", stored.actors[0]).contains(a.secret_key.expose()));
    }
}
