//! The state every handler shares: configuration, auditor, actors, task book, metrics, the
//! upstream and relay HTTP clients, and the in-flight relay tracker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime};

use http::HeaderValue;
use kling_api::auth::TokenCache;
use kling_api::SecretString;
use tokio::sync::Notify;

use crate::actors::{self, ActorIndex};
use crate::audit::Auditor;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::tasks::TaskBook;

/// Counts relays still running so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct RelayTracker {
    running: AtomicUsize,
    idle: Notify,
}

impl RelayTracker {
    /// Marks one relay started; the guard marks it finished when dropped.
    pub fn start(self: &Arc<Self>) -> RelayGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        RelayGuard(Arc::clone(self))
    }

    /// Relays still running.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until no relay runs.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Ends one relay's tracking when dropped.
#[derive(Debug)]
pub struct RelayGuard(Arc<RelayTracker>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Modification time and length of the actor store file.
type Stamp = Option<(SystemTime, u64)>;

/// The actor store as loaded, with the file stamp it was loaded at.
pub struct Actors {
    path: PathBuf,
    current: RwLock<(Arc<ActorIndex>, Stamp)>,
}

impl Actors {
    /// Loads the store at `path`.
    ///
    /// # Errors
    /// A store that cannot be read or parsed.
    pub fn load(path: PathBuf) -> Result<Self, actors::ActorError> {
        let stamp = actors::file_stamp(&path);
        let index = ActorIndex::load(&path)?;
        Ok(Self {
            path,
            current: RwLock::new((Arc::new(index), stamp)),
        })
    }

    /// The current index.
    pub fn index(&self) -> Arc<ActorIndex> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        )
    }

    /// Reloads the store when its file changed. A store that fails to load keeps the old
    /// index in force (logged), so a half-edited file cannot lock everyone out or in.
    pub fn refresh(&self) {
        let stamp = actors::file_stamp(&self.path);
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            == stamp;
        if unchanged {
            return;
        }
        match ActorIndex::load(&self.path) {
            Ok(index) => {
                let count = index.len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    (Arc::new(index), stamp);
                tracing::info!(target: "kling_audit_gateway::actors", actors = count, "actor store reloaded");
            }
            Err(e) => {
                tracing::error!(target: "kling_audit_gateway::actors", error = %e, "actor store not reloaded; keeping the previous one");
            }
        }
    }
}

/// The header every forwarded call carries, made again only when the organisation's token
/// changes: formatting and checking it on every call cost more than the rest of the signing.
#[derive(Default)]
pub(crate) struct OrgBearer(Mutex<Option<(SecretString, HeaderValue)>>);

impl OrgBearer {
    /// `Bearer <token>` for the cache's current token; the error says why none can be made.
    pub(crate) fn header(&self, cache: &TokenCache) -> Result<HeaderValue, String> {
        cache
            .with_token(|issued| {
                let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((token, value)) = &*slot {
                    if token.expose() == issued.token.expose() {
                        return Ok(value.clone());
                    }
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {}", issued.token.expose()))
                    .map_err(|_| "credential is not header-safe".to_owned())?;
                value.set_sensitive(true);
                *slot = Some((issued.token.clone(), value.clone()));
                Ok(value)
            })
            .map_err(|e| e.to_string())?
    }
}

/// Shared by every handler.
pub struct AppState {
    /// The configuration.
    pub cfg: GatewayConfig,
    /// The audit ledger.
    pub auditor: Arc<Auditor>,
    /// Caller keys.
    pub actors: Actors,
    /// Task ownership.
    pub tasks: TaskBook,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream client (one connection pool per serving thread).
    pub(crate) upstream: crate::upstream::Upstream,
    /// Callback relay client.
    pub relay: reqwest::Client,
    /// The organisation's JWTs, renewed before expiry.
    pub org_tokens: Option<TokenCache>,
    /// The `Authorization` header made of the current organisation JWT.
    pub(crate) org_bearer: OrgBearer,
    /// `<public base>/_gateway/callback/`.
    pub callback_base: String,
    /// Relays in flight.
    pub relays: Arc<RelayTracker>,
    /// Start time.
    pub started: Instant,
    /// Requests answered on the API surface.
    pub served: AtomicU64,
    /// Caller tokens whose signatures were checked.
    pub verified: crate::verified::VerifiedTokens,
    /// Memory for request bodies, shared by all requests.
    pub(crate) bodies: crate::body::BodyBudget,
    /// Refusals of unauthenticated requests recorded one by one, and the count of the rest.
    pub(crate) denials: crate::flood::DenialBudget,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kling_api::auth::TokenPolicy;

    #[test]
    fn the_org_header_is_kept_while_the_token_lasts_and_follows_a_new_one() {
        let cache = TokenCache::new(
            "org-ak",
            SecretString::new("org-sk"),
            TokenPolicy::default(),
        )
        .unwrap();
        let bearer = OrgBearer::default();
        let first = bearer.header(&cache).unwrap();
        let token = cache.token().unwrap();
        assert_eq!(
            first.to_str().unwrap(),
            format!("Bearer {}", token.token.expose())
        );
        assert!(first.is_sensitive());
        assert_eq!(bearer.header(&cache).unwrap(), first);

        // A renewed token (here: invalidated after a 1004) gets its own header.
        cache.invalidate();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let renewed = bearer.header(&cache).unwrap();
        let token = cache.token().unwrap();
        assert_ne!(renewed, first);
        assert_eq!(
            renewed.to_str().unwrap(),
            format!("Bearer {}", token.token.expose())
        );
    }
}
