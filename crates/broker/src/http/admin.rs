//! The admin API: read-only JSON views of connections, destinations and queues, and one
//! write action, closing a connection. Every request needs `Authorization: Bearer`
//! with the configured `admin-token`, or a JWT whose roles include `admin-role`.

use serde_json::{Value, json};

use postbox_auth::Credentials;

use super::{Request, Response};
use crate::state::BrokerState;

/// Routes an `/admin` request.
pub fn handle(state: &BrokerState, request: &Request) -> Response {
    if let Err(refusal) = authorize(state, request) {
        return refusal;
    }
    let path: Vec<&str> = request
        .path
        .trim_end_matches('/')
        .split('/')
        .skip(2)
        .collect();
    match (request.method.as_str(), path.as_slice()) {
        ("GET", []) => Response::json(
            200,
            &json!({"endpoints": [
                "GET /admin/connections",
                "GET /admin/connections/{id}",
                "POST /admin/connections/{id}/close",
                "GET /admin/destinations",
                "GET /admin/queues",
                "GET /admin/presence",
                "GET /admin/cluster",
            ]}),
        ),
        ("GET", ["connections"]) => {
            let connections: Vec<Value> = state
                .sessions
                .registry
                .all()
                .iter()
                .map(|c| c.json())
                .collect();
            Response::json(200, &json!({"connections": connections}))
        }
        ("GET", ["connections", id]) => match state.sessions.registry.get(id) {
            Some(connection) => Response::json(200, &connection.json()),
            None => not_found(id),
        },
        ("POST", ["connections", id, "close"]) | ("DELETE", ["connections", id]) => {
            match state.sessions.registry.get(id) {
                Some(connection) => {
                    connection.close();
                    tracing::info!(session = id, "connection closed by an operator");
                    Response::json(202, &json!({"closing": id}))
                }
                None => not_found(id),
            }
        }
        ("GET", ["destinations"]) => Response::json(200, &destinations(state)),
        ("GET", ["queues"]) => Response::json(200, &queues(state)),
        ("GET", ["presence"]) => Response::json(200, &presence(state)),
        ("GET", ["cluster"]) => Response::json(200, &cluster(state)),
        ("GET", _) => Response::json(404, &json!({"error": "no such admin resource"})),
        _ => Response::json(405, &json!({"error": "method not allowed"})),
    }
}

fn not_found(id: &str) -> Response {
    Response::json(404, &json!({"error": format!("no connection '{id}'")}))
}

fn authorize(state: &BrokerState, request: &Request) -> Result<(), Response> {
    let token = request
        .header("Authorization")
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let authenticator = state.sessions.auth.current();
    if state.admin_token.is_none() && !authenticator.accepts_tokens() {
        return Err(Response::json(
            403,
            &json!({"error": "the admin API is disabled: configure admin-token or JWT authentication"}),
        ));
    }
    let Some(token) = token else {
        return Err(
            Response::json(401, &json!({"error": "authentication required"}))
                .with_header("WWW-Authenticate", "Bearer"),
        );
    };
    if let Some(expected) = &state.admin_token
        && constant_time_eq(expected.as_bytes(), token.as_bytes())
    {
        return Ok(());
    }
    if authenticator.accepts_tokens() {
        let credentials = Credentials {
            bearer: Some(token),
            ..Credentials::default()
        };
        match authenticator.authenticate(&credentials, crate::auth::now()) {
            Ok(principal) if principal.roles.contains(&state.admin_role) => return Ok(()),
            Ok(principal) => {
                tracing::info!(user = principal.name, "admin API refused: no admin role");
                return Err(Response::json(
                    403,
                    &json!({"error": "not an administrator"}),
                ));
            }
            Err(error) => tracing::info!(reason = %error, "admin API authentication failed"),
        }
    }
    Err(
        Response::json(401, &json!({"error": "authentication failed"}))
            .with_header("WWW-Authenticate", "Bearer"),
    )
}

/// Compares secrets without an early exit that would reveal how much matched.
/// Compares without a timing difference that would tell how much of a guess was right
/// (the length may show; the token's length is no secret worth keeping).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn destinations(state: &BrokerState) -> Value {
    let mut out = Vec::new();
    for router in state.sessions.vhosts.routers() {
        let vhost = router.vhost();
        let topics = router.topic_subscriptions().into_iter();
        let queues = router
            .queues()
            .into_iter()
            .map(|queue| (queue.destination().to_string(), queue.consumer_count()));
        for (destination, local) in topics.chain(queues) {
            let cluster = state
                .cluster
                .as_ref()
                .map(|c| c.presence(vhost, &destination));
            out.push(json!({
                "vhost": vhost,
                "destination": destination,
                "subscribers": local,
                "subscribers_in_cluster": cluster,
            }));
        }
    }
    json!({"destinations": out})
}

/// Every room with members, per virtual host: who is in it and with how many
/// subscriptions.
///
/// At most [`MAX_ROOMS_LISTED`] rooms and [`postbox_router::presence::MAX_LISTED`]
/// members each are listed (with `"truncated": true` where cut), so one answer stays a
/// bounded size however many rooms there are; `count` is always the full count.
fn presence(state: &BrokerState) -> Value {
    use postbox_router::presence::MAX_LISTED;
    let mut out = Vec::new();
    let mut truncated = false;
    for router in state.sessions.vhosts.routers() {
        for room in router.presence() {
            if out.len() == MAX_ROOMS_LISTED {
                truncated = true;
                break;
            }
            let members: Vec<Value> = room
                .members
                .iter()
                .take(MAX_LISTED)
                .map(|(user, subscriptions)| json!({"user": user, "subscriptions": subscriptions}))
                .collect();
            out.push(json!({
                "vhost": router.vhost(),
                "destination": room.destination,
                "count": room.members.len(),
                "members": members,
                "truncated": room.members.len() > MAX_LISTED,
            }));
        }
    }
    json!({"rooms": out, "truncated": truncated})
}

/// Most rooms one `GET /admin/presence` lists.
const MAX_ROOMS_LISTED: usize = 1_000;

fn queues(state: &BrokerState) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::new();
    for router in state.sessions.vhosts.routers() {
        for queue in router.queues() {
            let (ready, unacked) = queue.depth();
            let stats = queue.stats();
            out.push(json!({
                "vhost": router.vhost(),
                "queue": queue.destination().to_string(),
                "depth": ready,
                "unacked": unacked,
                "consumers": queue.consumer_count(),
                "enqueued": stats.enqueued.load(Relaxed),
                "delivered": stats.delivered.load(Relaxed),
                "redelivered": stats.redelivered.load(Relaxed),
                "acked": stats.acked.load(Relaxed),
                "expired": stats.expired.load(Relaxed),
                "dead_lettered": stats.dead_lettered.load(Relaxed),
                "dropped": stats.dropped.load(Relaxed),
            }));
        }
    }
    json!({"queues": out})
}

fn cluster(state: &BrokerState) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    match &state.cluster {
        None => json!({"clustered": false}),
        Some(cluster) => {
            let stats = cluster.stats();
            json!({
                "clustered": true,
                "node": cluster.node_id(),
                "peers": cluster.peers(),
                "connected": stats.connected.load(Relaxed),
                "forwarded": stats.forwarded.load(Relaxed),
                "received": stats.received.load(Relaxed),
                "errors": stats.errors.load(Relaxed),
                "reconnects": stats.reconnects.load(Relaxed),
                "control_dropped": stats.control_dropped.load(Relaxed),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_fully() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
