//! Request/reply through a queue and a temporary reply queue.
//!
//! Start a broker (`cargo run --release --bin postbox`), then
//! `cargo run -p postbox-examples --bin request_reply [host:port]`.
#![allow(clippy::print_stdout)]

use postbox_examples::{Connection, addr_from_args};
use postbox_stomp::{Command, Frame, FrameError};

#[tokio::main]
async fn main() -> Result<(), FrameError> {
    let addr = addr_from_args();

    // The service consumes /queue/upper and answers to whatever reply-to says.
    let mut service = Connection::connect(&addr).await?;
    service
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "requests")
                .header("destination", "/queue/upper")
                .header("ack", "client-individual")
                .header("receipt", "ready"),
        )
        .await?;
    service.receive().await?;
    let worker = tokio::spawn(async move {
        let request = service.receive().await?;
        let reply_to = request.get("reply-to").unwrap_or_default().to_owned();
        let answer = String::from_utf8_lossy(&request.body).to_uppercase();
        service
            .send(
                Frame::new(Command::Send)
                    .header("destination", reply_to)
                    .body(answer),
            )
            .await?;
        let ack = request.get("ack").unwrap_or_default().to_owned();
        service
            .send(Frame::new(Command::Ack).header("id", ack))
            .await?;
        service.disconnect().await
    });

    // The client asks, naming a temporary queue that only it can read.
    let mut client = Connection::connect(&addr).await?;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/upper")
                .header("reply-to", "/temp-queue/answers")
                .body("hello, postbox"),
        )
        .await?;
    let reply = client.receive().await?;
    println!("reply: {}", String::from_utf8_lossy(&reply.body));
    client.disconnect().await?;
    worker.await.expect("service task")
}
