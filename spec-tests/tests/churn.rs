//! STOMP 1.2 "Connecting": rapid connect/disconnect must be tolerated.

use postbox_spec_tests::*;

#[tokio::test]
async fn rapid_connect_and_disconnect() {
    let target = Target::new();
    for _ in 0..200 {
        let mut client = Client::open(target.addr).await;
        client.send(&target.connect_frame()).await;
        client.send_raw(b"DISCONNECT\n\n\0").await;
        drop(client);
    }
    for _ in 0..50 {
        // Connections dropped before CONNECT, and mid-frame.
        let mut client = Client::open(target.addr).await;
        client.send_raw(b"CONNE").await;
    }
    let mut client = target.connect().await;
    let topic = unique("/topic/", "after-churn");
    client.subscribe("0", &topic, &[]).await;
    client.publish(&topic, "still alive").await;
    client.expect(Command::Message).await;
}
