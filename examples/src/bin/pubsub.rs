//! Publish/subscribe on a topic with a wildcard subscription.
//!
//! Start a broker (`cargo run --release --bin postbox`), then
//! `cargo run -p postbox-examples --bin pubsub [host:port]`.
#![allow(clippy::print_stdout)]

use postbox_examples::{Connection, addr_from_args};
use postbox_stomp::{Command, Frame, FrameError};

#[tokio::main]
async fn main() -> Result<(), FrameError> {
    let addr = addr_from_args();
    let mut subscriber = Connection::connect(&addr).await?;
    subscriber
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "prices")
                .header("destination", "/topic/prices.*")
                .header("receipt", "ready"),
        )
        .await?;
    subscriber.receive().await?; // the RECEIPT: the subscription is active

    let mut publisher = Connection::connect(&addr).await?;
    for (symbol, price) in [("ACME", "12.50"), ("INITECH", "3.10")] {
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", format!("/topic/prices.{symbol}"))
                    .header("content-type", "text/plain")
                    .body(price),
            )
            .await?;
    }
    for _ in 0..2 {
        let message = subscriber.receive().await?;
        println!(
            "{} = {}",
            message.get("destination").unwrap_or_default(),
            String::from_utf8_lossy(&message.body)
        );
    }
    publisher.disconnect().await?;
    subscriber.disconnect().await
}
