//! Who is in the cluster: liveness keys, the node set, and keeping the interest
//! replica (and this node's own interest in Redis) up to date.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use tracing::{info, warn};

use crate::{Inner, interest_field, split_field};

/// How often liveness is refreshed and the replica re-read.
fn tick(inner: &Inner) -> Duration {
    (inner.config.node_ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Marks this node alive and in the node set, and makes sure Redis holds its interest
/// (after a Redis restart it would not).
pub(crate) async fn announce(inner: &Inner) -> Result<(), Error> {
    let node = inner.node();
    let ttl = inner.config.node_ttl.as_millis() as i64;
    let _: () = inner
        .client
        .set(
            inner.alive_key(node),
            "1",
            Some(Expiration::PX(ttl)),
            None,
            false,
        )
        .await?;
    let _: () = inner.client.sadd(inner.nodes_key(), node).await?;
    let wanted: HashMap<String, i64> = inner
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|((vhost, destination), count)| (interest_field(vhost, destination), *count as i64))
        .collect();
    let stored: HashMap<String, i64> = inner.client.hgetall(inner.interest_key(node)).await?;
    if stored != wanted {
        let _: () = inner.client.del(inner.interest_key(node)).await?;
        if !wanted.is_empty() {
            let _: () = inner.client.hset(inner.interest_key(node), wanted).await?;
        }
    }
    Ok(())
}

/// Re-reads the live nodes and their interest; forgets nodes whose liveness expired.
///
/// A node is alive while its liveness key exists; the key expires `node_ttl` after the
/// node last refreshed it (every `tick`, a third of the TTL). So a crashed node stops
/// receiving forwarded messages within `node_ttl` plus one tick, and any node may clean
/// up after it: removing it twice is harmless.
pub(crate) async fn sync(inner: &Inner) {
    if let Err(error) = sync_inner(inner).await {
        inner.failed("reading cluster membership", &error);
    }
}

async fn sync_inner(inner: &Inner) -> Result<(), Error> {
    let members: Vec<String> = inner.client.smembers(inner.nodes_key()).await?;
    let mut alive = Vec::new();
    for node in members.into_iter().filter(|n| n != inner.node()) {
        let exists: i64 = inner.client.exists(inner.alive_key(&node)).await?;
        if exists > 0 {
            alive.push(node);
        } else {
            // Gone: whoever notices first cleans up after it.
            let _: () = inner.client.srem(inner.nodes_key(), &node).await?;
            let _: () = inner.client.del(inner.interest_key(&node)).await?;
            info!(node, "cluster node left (its liveness key expired)");
        }
    }
    let mut snapshots = Vec::with_capacity(alive.len());
    for node in &alive {
        let fields: HashMap<String, i64> = inner.client.hgetall(inner.interest_key(node)).await?;
        let entries: Vec<(String, String, usize)> = fields
            .into_iter()
            .filter_map(|(field, count)| {
                let (vhost, destination) = split_field(&field)?;
                Some((
                    vhost.to_owned(),
                    destination.to_owned(),
                    count.max(0) as usize,
                ))
            })
            .collect();
        snapshots.push((node.clone(), entries));
    }
    let mut replica = inner.replica.write().unwrap_or_else(|p| p.into_inner());
    let known: Vec<String> = replica.nodes().map(str::to_owned).collect();
    for node in known {
        if !alive.contains(&node) {
            replica.remove_node(&node);
        }
    }
    for (node, entries) in snapshots {
        if !replica.knows(&node) {
            info!(node, "cluster node joined");
        }
        replica.replace_node(&node, entries);
    }
    Ok(())
}

/// Keeps this node alive and the replica fresh until the relay stops.
pub(crate) async fn heartbeat(inner: Arc<Inner>) {
    let mut ticks = tokio::time::interval(tick(&inner));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match announce(&inner).await {
            Ok(()) => sync(&inner).await,
            Err(error) => inner.failed("refreshing liveness", &error),
        }
    }
}

/// Tracks the connection to Redis for logs and counters, and re-announces this node as
/// soon as it is back.
pub(crate) async fn watch_connection(inner: Arc<Inner>) {
    let mut reconnects = inner.client.reconnect_rx();
    let mut errors = inner.client.error_rx();
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            reconnected = reconnects.recv() => {
                if reconnected.is_err() {
                    return;
                }
                inner.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                inner.stats.connected.store(true, Ordering::Relaxed);
                info!("cluster: reconnected to Redis");
                if let Err(error) = announce(&inner).await {
                    inner.failed("re-announcing after reconnect", &error);
                }
                sync(&inner).await;
            }
            error = errors.recv() => {
                let Ok((error, _)) = error else { return };
                if inner.stats.connected.swap(false, Ordering::Relaxed) {
                    warn!("cluster: lost Redis ({error}); local delivery goes on, reconnecting with backoff");
                }
            }
        }
    }
}

/// Removes this node's liveness, membership and interest.
pub(crate) async fn leave(inner: &Inner) {
    let node = inner.node();
    let results: [Result<(), Error>; 3] = [
        inner.client.srem(inner.nodes_key(), node).await,
        inner.client.del(inner.alive_key(node)).await,
        inner.client.del(inner.interest_key(node)).await,
    ];
    for result in results {
        if let Err(error) = result {
            inner.failed("leaving the cluster", &error);
        }
    }
}
