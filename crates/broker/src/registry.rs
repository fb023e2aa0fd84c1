//! Every open session, for the admin API, metrics, logs and lame-duck shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use postbox_router::{CloseReason, Outbox};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Traffic counters of one connection.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Frames received (heart-beats excluded).
    pub frames_in: AtomicU64,
    /// SEND frames received.
    pub messages_in: AtomicU64,
    /// MESSAGE frames written.
    pub messages_out: AtomicU64,
}

impl Traffic {
    /// (frames in, messages in, messages out, bytes in, bytes out).
    pub fn snapshot(&self) -> [u64; 5] {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            get(&self.frames_in),
            get(&self.messages_in),
            get(&self.messages_out),
            get(&self.bytes_in),
            get(&self.bytes_out),
        ]
    }

    fn add(&self, other: &Traffic) {
        let [frames_in, messages_in, messages_out, bytes_in, bytes_out] = other.snapshot();
        self.frames_in.fetch_add(frames_in, Ordering::Relaxed);
        self.messages_in.fetch_add(messages_in, Ordering::Relaxed);
        self.messages_out.fetch_add(messages_out, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    fn json(&self) -> Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "bytes_in": get(&self.bytes_in),
            "bytes_out": get(&self.bytes_out),
            "frames_in": get(&self.frames_in),
            "messages_in": get(&self.messages_in),
            "messages_out": get(&self.messages_out),
        })
    }
}

/// One subscription, as the admin API shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    /// The client's id.
    pub id: String,
    /// The destination.
    pub destination: String,
    /// The ack mode.
    pub ack: &'static str,
}

/// An open session.
#[derive(Debug)]
pub struct Connection {
    /// What the session told the registry when it opened.
    pub opened: Opening,
    /// When it connected.
    pub connected_at: SystemTime,
    started: Instant,
    /// Its subscriptions.
    pub subscriptions: Mutex<Vec<SubscriptionInfo>>,
}

impl Connection {
    /// How long it has been open.
    pub fn age(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Closes the connection as an operator request.
    pub fn close(&self) {
        self.opened.outbox.close(CloseReason::Admin);
    }

    /// The admin API's view.
    pub fn json(&self) -> Value {
        let subscriptions: Vec<Value> = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| json!({"id": s.id, "destination": s.destination, "ack": s.ack}))
            .collect();
        let since_epoch = self
            .connected_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let opened = &self.opened;
        json!({
            "id": opened.id,
            "peer": opened.peer,
            "transport": opened.transport,
            "user": opened.user,
            "version": opened.version,
            "vhost": opened.vhost,
            "connected_at": since_epoch,
            "age_seconds": self.age().as_secs(),
            "subscriptions": subscriptions,
            "pending_bytes": opened.outbox.pending_bytes(),
            "traffic": opened.traffic.json(),
        })
    }
}

/// What a new session tells the registry about itself.
#[derive(Debug)]
pub struct Opening {
    /// Session id.
    pub id: String,
    /// Remote address.
    pub peer: String,
    /// Transport.
    pub transport: &'static str,
    /// User.
    pub user: String,
    /// Version.
    pub version: &'static str,
    /// Virtual host.
    pub vhost: String,
    /// Its outbox.
    pub outbox: Outbox,
    /// Its counters.
    pub traffic: Arc<Traffic>,
    /// Its goodbye signal.
    pub goodbye: CancellationToken,
}

/// The open sessions, and the traffic of those that closed.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    open: HashMap<String, Arc<Connection>>,
    /// Traffic of closed sessions, so totals only grow.
    closed: Traffic,
}

impl Registry {
    /// Adds a session; it is removed when the returned handle is dropped.
    pub fn open(self: &Arc<Registry>, opening: Opening) -> Registered {
        let connection = Arc::new(Connection {
            opened: opening,
            connected_at: SystemTime::now(),
            started: Instant::now(),
            subscriptions: Mutex::default(),
        });
        self.lock()
            .open
            .insert(connection.opened.id.clone(), connection.clone());
        Registered {
            registry: self.clone(),
            connection,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every open session.
    pub fn all(&self) -> Vec<Arc<Connection>> {
        let mut all: Vec<Arc<Connection>> = self.lock().open.values().cloned().collect();
        all.sort_by(|a, b| a.opened.id.cmp(&b.opened.id));
        all
    }

    /// One session by id.
    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.lock().open.get(id).cloned()
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.lock().open.is_empty()
    }

    /// Traffic of all sessions ever: (frames in, messages in, messages out, bytes in,
    /// bytes out). Read under the same lock that moves a closing session's counts, so
    /// the totals never go down.
    pub fn traffic_totals(&self) -> [u64; 5] {
        let sessions = self.lock();
        let mut totals = sessions.closed.snapshot();
        for connection in sessions.open.values() {
            for (total, value) in totals.iter_mut().zip(connection.opened.traffic.snapshot()) {
                *total += value;
            }
        }
        totals
    }
}

/// A session's entry in the registry; dropping it removes the entry.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    /// The entry.
    pub connection: Arc<Connection>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock();
        sessions.open.remove(&self.connection.opened.id);
        sessions.closed.add(&self.connection.opened.traffic);
    }
}
