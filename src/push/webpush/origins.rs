//! One set of HTTP/2 connections per push-service origin, made the first time a push goes there:
//! Chrome's pushes share `https://fcm.googleapis.com`'s connections, Firefox's Mozilla's, and so
//! on, each a `h2-shards` client like FCM's and APNs'. How a client is made (connections, TLS
//! roots, proxy, timeout) is the caller's [`Dial`]; only allowed origins ever reach it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::push::http2::{Http2Client, SetupError};

/// Makes the client for one origin (`https://host[:port]`).
pub(crate) type Dial = Box<dyn Fn(&str) -> Result<Http2Client, SetupError> + Send + Sync>;

/// Origins kept at most. Wildcards (`*.notify.windows.com`) admit many hosts; past this one
/// client is dropped for each new origin (its pushes in flight keep it until they finish).
const MAX_ORIGINS: usize = 256;

pub(super) struct Origins {
    dial: Dial,
    clients: RwLock<HashMap<String, Arc<Http2Client>>>,
}

impl Origins {
    pub(super) fn new(dial: Dial) -> Self {
        Self {
            dial,
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// The origin's client, made on first use (no connection is dialled until a request).
    pub(super) fn client(&self, origin: &str) -> Result<Arc<Http2Client>, SetupError> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(origin) {
            return Ok(Arc::clone(client));
        }
        drop(clients);
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(origin) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new((self.dial)(origin)?);
        if clients.len() >= MAX_ORIGINS
            && let Some(evicted) = clients.keys().next().cloned()
        {
            clients.remove(&evicted);
        }
        clients.insert(origin.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Dials every connection of the origins seen so far.
    pub(super) async fn warm(&self) {
        let clients: Vec<Arc<Http2Client>> = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        futures_util::future::join_all(clients.iter().map(|client| client.warm())).await;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
