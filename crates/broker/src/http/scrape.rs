//! The Prometheus scrape: the counters the broker bumps as it works, plus gauges read
//! from its state at this moment (connections, subscriptions, queues, the cluster, the
//! TLS certificate). Assembled here, on the HTTP side, so the counters know nothing of
//! the state they sit in.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Labels;
use crate::state::BrokerState;

/// The text exposition format: counters and this moment's gauges.
pub fn render(state: &BrokerState) -> String {
    let mut out = String::new();
    state.sessions.metrics.encode(&mut out);
    let _ = encode_registry(&mut out, &gauges(state));
    let _ = encode_eof(&mut out);
    out
}

/// A registry of this moment's gauges.
fn gauges(state: &BrokerState) -> Registry {
    let mut registry = Registry::with_prefix("postbox");
    let gauge = |registry: &mut Registry, name: &str, help: &str, values: Vec<(Labels, i64)>| {
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in values {
            family.get_or_create(&labels).set(value);
        }
        registry.register(name, help, family);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let metric = Counter::<u64>::default();
        metric.inc_by(value);
        registry.register(name, help, metric);
    };

    // Traffic.
    let [frames_in, messages_in, messages_out, bytes_in, bytes_out] =
        state.sessions.registry.traffic_totals();
    counter(
        &mut registry,
        "frames_received",
        "Frames received from clients",
        frames_in,
    );
    counter(
        &mut registry,
        "messages_received",
        "SEND frames received",
        messages_in,
    );
    counter(
        &mut registry,
        "messages_delivered",
        "MESSAGE frames written",
        messages_out,
    );
    counter(
        &mut registry,
        "received_bytes",
        "Bytes read from clients",
        bytes_in,
    );
    counter(
        &mut registry,
        "sent_bytes",
        "Bytes written to clients",
        bytes_out,
    );

    // The memory alarm.
    let memory = &state.sessions.memory;
    gauge(
        &mut registry,
        "memory_alarm",
        "1 while resident memory is above memory-high-watermark and publishers are paused",
        vec![(Vec::new(), i64::from(memory.is_raised()))],
    );
    gauge(
        &mut registry,
        "resident_memory_bytes",
        "Resident memory at the memory alarm's last sample",
        vec![(Vec::new(), memory.resident() as i64)],
    );
    gauge(
        &mut registry,
        "memory_high_watermark_bytes",
        "The memory alarm's watermark",
        vec![(Vec::new(), memory.limit().min(i64::MAX as u64) as i64)],
    );
    // The global queue budget (every router shares it).
    if let Some(router) = state.sessions.vhosts.routers().next() {
        let budget = router.budget();
        gauge(
            &mut registry,
            "queued_bytes",
            "Bytes of messages held by all queues together",
            vec![(Vec::new(), budget.used().min(i64::MAX as usize) as i64)],
        );
        gauge(
            &mut registry,
            "max_queued_bytes",
            "The limit of bytes held by all queues together (max-queued-bytes)",
            vec![(Vec::new(), budget.limit().min(i64::MAX as usize) as i64)],
        );
    }
    counter(
        &mut registry,
        "memory_alarms",
        "Times the memory alarm was raised",
        memory.raised_count(),
    );

    // Connections and subscriptions.
    let mut by_transport: std::collections::BTreeMap<(String, String), i64> = Default::default();
    let mut subscriptions = 0;
    for connection in state.sessions.registry.all() {
        *by_transport
            .entry((
                connection.opened.transport.to_owned(),
                connection.opened.vhost.clone(),
            ))
            .or_default() += 1;
        subscriptions += connection
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as i64;
    }
    let values = by_transport
        .into_iter()
        .map(|((transport, vhost), n)| {
            (
                vec![("transport".into(), transport), ("vhost".into(), vhost)],
                n,
            )
        })
        .collect();
    gauge(
        &mut registry,
        "connections",
        "Open connections by transport and virtual host",
        values,
    );
    gauge(
        &mut registry,
        "subscriptions",
        "Active subscriptions",
        vec![(vec![], subscriptions)],
    );

    // Destinations and queues, in every virtual host.
    let mut topics = 0;
    let mut queues = Vec::new();
    let mut totals = [0u64; 3];
    let mut router_totals = [0u64; 7];
    let mut members = 0;
    for router in state.sessions.vhosts.routers() {
        topics += router.topic_subscriptions().len() as i64;
        members += router.presence_members() as i64;
        let stats = router.stats();
        for (slot, value) in router_totals.iter_mut().zip([
            &stats.published,
            &stats.delivered,
            &stats.slow_consumers,
            &stats.unroutable,
            &stats.dead_letters_dropped,
            &stats.presence_enters,
            &stats.presence_quits,
        ]) {
            *slot += value.load(Ordering::Relaxed);
        }
        let queue_totals = router.queue_totals();
        for (slot, value) in totals.iter_mut().zip([
            &queue_totals.redelivered,
            &queue_totals.dead_lettered,
            &queue_totals.expired,
        ]) {
            *slot += value.load(Ordering::Relaxed);
        }
        for queue in router.queues() {
            let (ready, unacked) = queue.depth();
            queues.push((
                router.vhost().to_owned(),
                queue.destination().to_string(),
                ready,
                unacked,
                queue.consumer_count(),
            ));
        }
    }
    let queue_count = queues.len() as i64;
    gauge(
        &mut registry,
        "destinations",
        "Destinations in use, by kind",
        vec![
            (vec![("kind".into(), "topic".into())], topics),
            (vec![("kind".into(), "queue".into())], queue_count),
        ],
    );
    let depth_total: i64 = queues.iter().map(|q| q.2 as i64).sum();
    let unacked_total: i64 = queues.iter().map(|q| q.3 as i64).sum();
    gauge(
        &mut registry,
        "queue_depth_all",
        "Ready messages in all queues",
        vec![(vec![], depth_total)],
    );
    gauge(
        &mut registry,
        "queue_unacked_all",
        "Unacknowledged messages in all queues",
        vec![(vec![], unacked_total)],
    );
    // Per-queue series for the deepest queues only, so label cardinality stays bounded.
    queues.sort_by_key(|q| std::cmp::Reverse(q.2 + q.3));
    queues.truncate(state.metrics_queue_top);
    let labels = |q: &(String, String, usize, usize, usize)| {
        vec![("vhost".into(), q.0.clone()), ("queue".into(), q.1.clone())]
    };
    gauge(
        &mut registry,
        "queue_depth",
        "Ready messages in a queue (deepest queues)",
        queues.iter().map(|q| (labels(q), q.2 as i64)).collect(),
    );
    gauge(
        &mut registry,
        "queue_unacked",
        "Unacknowledged messages of a queue (deepest queues)",
        queues.iter().map(|q| (labels(q), q.3 as i64)).collect(),
    );
    gauge(
        &mut registry,
        "queue_consumers",
        "Consumers of a queue (deepest queues)",
        queues.iter().map(|q| (labels(q), q.4 as i64)).collect(),
    );
    counter(
        &mut registry,
        "redelivered",
        "Messages delivered again after NACK or a consumer leaving",
        totals[0],
    );
    counter(
        &mut registry,
        "dead_lettered",
        "Messages moved to a dead-letter queue",
        totals[1],
    );
    counter(
        &mut registry,
        "expired",
        "Messages that expired before delivery",
        totals[2],
    );
    counter(
        &mut registry,
        "published",
        "Messages routed (local and from other nodes)",
        router_totals[0],
    );
    counter(
        &mut registry,
        "topic_deliveries",
        "Deliveries to topic subscribers",
        router_totals[1],
    );
    counter(
        &mut registry,
        "slow_consumers",
        "Subscribers cut off for falling behind",
        router_totals[2],
    );
    counter(
        &mut registry,
        "unroutable",
        "Replies to temporary queues that no longer exist",
        router_totals[3],
    );
    gauge(
        &mut registry,
        "presence_members",
        "Members of presence rooms (a person in two rooms counts twice)",
        vec![(vec![], members)],
    );
    let events = Family::<Labels, Counter>::default();
    for (kind, value) in [("enter", router_totals[5]), ("quit", router_totals[6])] {
        events
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc_by(value);
    }
    registry.register(
        "presence_events",
        "Presence events published, by kind",
        events,
    );

    // The cluster.
    if let Some(cluster) = &state.cluster {
        let stats = cluster.stats();
        let connected = i64::from(stats.connected.load(Ordering::Relaxed));
        gauge(
            &mut registry,
            "cluster_connected",
            "Whether Redis is reachable",
            vec![(vec![], connected)],
        );
        gauge(
            &mut registry,
            "cluster_peers",
            "Other nodes seen alive",
            vec![(vec![], cluster.peers().len() as i64)],
        );
        counter(
            &mut registry,
            "cluster_forwarded",
            "Messages sent to other nodes",
            stats.forwarded.load(Ordering::Relaxed),
        );
        counter(
            &mut registry,
            "cluster_received",
            "Messages received from other nodes",
            stats.received.load(Ordering::Relaxed),
        );
        counter(
            &mut registry,
            "cluster_errors",
            "Failed Redis operations",
            stats.errors.load(Ordering::Relaxed),
        );
        counter(
            &mut registry,
            "cluster_reconnects",
            "Reconnections to Redis",
            stats.reconnects.load(Ordering::Relaxed),
        );
        counter(
            &mut registry,
            "cluster_control_dropped",
            "Interest changes and queue acknowledgements dropped because the control queue was full",
            stats.control_dropped.load(Ordering::Relaxed),
        );
    }

    // The TLS certificate.
    if let Some(expiry) = state.certs.as_ref().and_then(|c| c.expiry()) {
        gauge(
            &mut registry,
            "tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate in use expires (Unix time)",
            vec![(vec![], expiry)],
        );
    }
    let ready = i64::from(state.ready.load(Ordering::Relaxed));
    gauge(
        &mut registry,
        "ready",
        "Whether the broker accepts connections",
        vec![(vec![], ready)],
    );
    gauge(
        &mut registry,
        "start_time_seconds",
        "When the process started (Unix time)",
        vec![(vec![], state.started as i64)],
    );
    registry
}
