//! The session in process, over `tokio::io::duplex`, against a real router: what a
//! client that never reads, floods, or vanishes mid-way does to the broker. A duplex
//! pipe has a bounded buffer, so a client that does not read really stops the writer,
//! as a full TCP window does; time is paused where a test waits for a timer.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postbox_stomp::{Command, Frame, Item, Limits, StompCodec, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::{Context, Peer, Services, Settings, serve};
use crate::Config;
use crate::auth::AuthHandle;
use crate::vhost::Vhosts;

/// A broker without listeners: sessions are served straight over pipes.
struct Broker {
    context: Context,
}

impl Broker {
    fn new(config: Config) -> Broker {
        let services = Arc::new(Services::new(
            Settings::from_config(&config, "test"),
            Vhosts::new(&config, "test"),
            AuthHandle::load(&config).expect("auth"),
        ));
        Broker {
            context: Context {
                services,
                shutdown: CancellationToken::new(),
            },
        }
    }

    fn services(&self) -> &Arc<Services> {
        &self.context.services
    }

    /// A new connection whose pipe buffers `pipe` bytes each way.
    fn open(&self, pipe: usize) -> (Client, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(pipe);
        let (read, write) = tokio::io::split(server);
        let peer = Peer {
            addr: "pipe".into(),
            ip: None,
            transport: "test",
            query_token: None,
        };
        let session = tokio::spawn(serve(read, write, self.context.clone(), peer));
        (Client::new(client), session)
    }

    /// A connection that has sent CONNECT and read CONNECTED.
    async fn connected(&self, pipe: usize) -> (Client, JoinHandle<()>) {
        let (mut client, session) = self.open(pipe);
        client
            .send("CONNECT\naccept-version:1.2\nhost:/\n\n\0")
            .await;
        let connected = client.frame().await.expect("CONNECTED");
        assert_eq!(connected.command, Command::Connected);
        (client, session)
    }
}

/// The client's end of a pipe, speaking raw bytes out and frames in.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
    codec: StompCodec,
}

impl Client {
    fn new(io: DuplexStream) -> Client {
        Client {
            io,
            buf: BytesMut::new(),
            codec: StompCodec::new(Version::V1_2, Limits::default()),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.io.write_all(bytes.as_bytes()).await.expect("write");
    }

    /// The next frame, `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            match self.codec.decode(&mut self.buf).expect("valid frames") {
                Some(Item::Frame(frame)) => return Some(frame),
                Some(Item::HeartBeat) => continue,
                None => {}
            }
            let mut chunk = [0; 4096];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame, which must be a MESSAGE with `body`.
    async fn message(&mut self) -> Frame {
        let frame = self.frame().await.expect("a frame");
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        frame
    }
}

fn small_outbound(bytes: usize) -> Config {
    let mut config = Config::defaults();
    config.outbound_buffer = bytes;
    config
}

#[tokio::test(start_paused = true)]
async fn a_client_that_asks_for_receipts_and_never_reads_is_held_back_then_closed() {
    const LIMIT: usize = 16 * 1024;
    let broker = Broker::new(small_outbound(LIMIT));
    let (mut client, session) = broker.connected(4096).await;
    let connection = broker.services().registry.all().pop().expect("registered");
    // Up to 40 MiB of frames that each ask for a RECEIPT; the client never reads.
    let frame = "SEND\ndestination:/topic/void\nreceipt:a-receipt-id-of-some-length\n\n\0";
    let mut sent = 0usize;
    let flood = async {
        while sent < 40 << 20 {
            if client.io.write_all(frame.as_bytes()).await.is_err() {
                break;
            }
            sent += frame.len();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), flood).await;
    let pending = connection.opened.outbox.pending_bytes();
    let read = connection
        .opened
        .traffic
        .bytes_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 1 << 20,
        "the broker stopped reading: {sent} bytes sent"
    );
    assert!(read < 1 << 20, "the broker read {read} bytes");
    assert!(
        pending <= LIMIT + 1024 || session.is_finished(),
        "pending {pending} bytes"
    );
    // It never reads, so after the stall time it is cut off, and its session ends.
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("closed as a slow consumer")
        .unwrap();
    assert!(broker.services().registry.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_reads_its_receipts_late_gets_them_all() {
    let broker = Broker::new(small_outbound(4096));
    let (client, session) = broker.connected(1024).await;
    let (mut read, mut write) = tokio::io::split(client.io);
    const FRAMES: usize = 2_000;
    let writing = tokio::spawn(async move {
        for i in 0..FRAMES {
            let frame = format!("SEND\ndestination:/topic/void\nreceipt:r{i}\n\n\0");
            write.write_all(frame.as_bytes()).await.expect("write");
        }
        write
    });
    // Reads nothing for a while (less than the stall time), then everything.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut reader = Client::new(tokio::io::duplex(1).0);
    let mut next = 0;
    while next < FRAMES {
        let mut chunk = [0; 4096];
        let n = read.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed after {next} receipts");
        reader.buf.extend_from_slice(&chunk[..n]);
        while let Some(Item::Frame(frame)) = reader.codec.decode(&mut reader.buf).unwrap() {
            assert_eq!(frame.command, Command::Receipt, "{frame:?}");
            assert_eq!(frame.get("receipt-id"), Some(format!("r{next}").as_str()));
            next += 1;
        }
    }
    let mut write = writing.await.unwrap();
    write.write_all(b"DISCONNECT\n\n\0").await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), session)
        .await
        .expect("ends after DISCONNECT")
        .unwrap();
}

/// Eight client-individual consumers of one queue leave abruptly, in every way a
/// connection can end, while a producer sends; a probe must keep getting its messages.
/// Runs on two worker threads, as the broker does: a dispatch that spins under the
/// queue's lock freezes both, which a single-threaded test could not show. The window
/// between a writer ending and its session removing the subscription is short, so this
/// catches that livelock only sometimes; the router's tests pin it down exactly.
#[test]
fn consumers_leaving_abruptly_never_freeze_a_queue() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (finished, wait) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let broker = Broker::new(Config::defaults());
        let (mut producer, _p) = broker.connected(64 * 1024).await;
        let (mut probe_sender, _s) = broker.connected(64 * 1024).await;
        let (mut probe, _q) = broker.connected(64 * 1024).await;
        probe
            .send("SUBSCRIBE\nid:probe\ndestination:/queue/probe\nreceipt:ready\n\n\0")
            .await;
        assert_eq!(probe.frame().await.unwrap().command, Command::Receipt);
        // The producer sends all along, so deliveries race every way of leaving.
        let sending = tokio::spawn(async move {
            for n in 0.. {
                producer
                    .send(&format!("SEND\ndestination:/queue/jobs\n\njob {n}\0"))
                    .await;
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        for round in 0..40 {
            let ack = ["auto", "client", "client-individual"][round % 3];
            let mut consumers = Vec::new();
            for i in 0..8 {
                let (mut consumer, session) = broker.connected(256).await;
                consumer
                    .send(&format!(
                        "SUBSCRIBE\nid:c{i}\ndestination:/queue/jobs\nack:{ack}\nprefetch-count:4\n\n\0"
                    ))
                    .await;
                consumers.push((consumer, session));
            }
            tokio::task::yield_now().await;
            // They go all at once: some say DISCONNECT, some just vanish (the pipe
            // closes with frames unread: a reset), some stop reading first.
            for (i, (mut consumer, session)) in consumers.into_iter().enumerate() {
                match i % 3 {
                    0 => consumer.send("DISCONNECT\n\n\0").await,
                    1 => drop(consumer),
                    _ => {
                        tokio::task::yield_now().await;
                        drop(consumer);
                    }
                }
                drop(session);
            }
            probe_sender
                .send(&format!("SEND\ndestination:/queue/probe\n\nprobe {round}\0"))
                .await;
            let message = tokio::time::timeout(Duration::from_secs(5), probe.message())
                .await
                .expect("the probe's round trip stays under a second or so");
            assert_eq!(&message.body[..], format!("probe {round}").as_bytes());
        }
        sending.abort();
        let _ = finished.send(());
    });
    let finished = wait.recv_timeout(Duration::from_secs(120));
    if finished.is_err() {
        // Dropping a runtime whose workers spin would hang the test instead of failing it.
        std::mem::forget(runtime);
        panic!("the broker froze while consumers left");
    }
}

#[tokio::test(start_paused = true)]
async fn the_memory_alarm_pauses_publishers_while_consumers_drain() {
    let broker = Broker::new(Config::defaults());
    let (mut consumer, _c) = broker.connected(64 * 1024).await;
    consumer
        .send("SUBSCRIBE\nid:s\ndestination:/queue/work\nreceipt:ready\n\n\0")
        .await;
    assert_eq!(consumer.frame().await.unwrap().command, Command::Receipt);
    let (mut publisher, _p) = broker.connected(64 * 1024).await;
    publisher
        .send("SEND\ndestination:/queue/work\n\nbefore\0")
        .await;
    assert_eq!(&consumer.message().await.body[..], b"before");

    let alarm = &broker.services().memory;
    alarm.set_limit(1000);
    alarm.update(2000);
    publisher
        .send("SEND\ndestination:/queue/work\nreceipt:held\n\nduring\0")
        .await;
    // Nothing is published while the alarm holds, however long it lasts.
    let early = tokio::time::timeout(Duration::from_secs(30), consumer.frame()).await;
    assert!(early.is_err(), "delivered during the alarm: {early:?}");
    // A consumer's own frames still go through.
    consumer
        .send("SUBSCRIBE\nid:t\ndestination:/topic/x\nreceipt:still\n\n\0")
        .await;
    let receipt = consumer.frame().await.unwrap();
    assert_eq!(receipt.get("receipt-id"), Some("still"));

    alarm.update(100);
    assert_eq!(&consumer.message().await.body[..], b"during");
    let receipt = publisher.frame().await.unwrap();
    assert_eq!(receipt.get("receipt-id"), Some("held"));
}

#[tokio::test(start_paused = true)]
async fn the_memory_alarm_stops_reading_a_large_frame_half_sent() {
    let broker = Broker::new(Config::defaults());
    let (mut publisher, _p) = broker.connected(16 * 1024).await;
    let connection = broker.services().registry.all().pop().expect("registered");
    let alarm = broker.services().memory.clone();
    alarm.set_limit(1000);
    alarm.update(2000);
    // 4 MiB of a frame's body, within max-frame-size, and no end yet.
    let body = vec![b'x'; 4 << 20];
    let head = "SEND\ndestination:/queue/big\nreceipt:whole\n\n";
    let write = async {
        publisher.io.write_all(head.as_bytes()).await.unwrap();
        publisher.io.write_all(&body).await.unwrap();
        publisher.io.write_all(b"\0").await.unwrap();
    };
    tokio::pin!(write);
    let stalled = tokio::time::timeout(Duration::from_secs(30), &mut write).await;
    assert!(
        stalled.is_err(),
        "the whole frame was read during the alarm"
    );
    let read = connection
        .opened
        .traffic
        .bytes_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(read < 256 * 1024, "{read} bytes read during the alarm");

    alarm.update(100);
    write.await;
    let receipt = publisher.frame().await.unwrap();
    assert_eq!(receipt.get("receipt-id"), Some("whole"), "{receipt:?}");
}

/// An auto-ack consumer whose last write broke off midway: what reached it in full was
/// delivered and counts as acknowledged; only the rest goes back to the queue, and a
/// message that comes back again carries `redelivered`. Found by the session fuzzer.
#[tokio::test(start_paused = true)]
async fn an_auto_ack_delivery_written_in_full_is_not_handed_back_when_a_later_write_fails() {
    let broker = Broker::new(Config::defaults());
    let (mut producer, _p) = broker.connected(64 * 1024).await;
    producer.send("SEND\ndestination:/queue/w\n\nsmall\0").await;
    let big = format!("SEND\ndestination:/queue/w\n\n{}\0", "x".repeat(4096));
    producer.send(&big).await;
    producer
        .send("SEND\ndestination:/queue/w\nreceipt:sent\n\n\0")
        .await;
    assert_eq!(producer.frame().await.unwrap().command, Command::Receipt);
    // Both messages go out in one write, larger than the pipe: the first arrives whole.
    let (mut consumer, session) = broker.connected(1024).await;
    consumer
        .send("SUBSCRIBE\nid:s\ndestination:/queue/w\n\n\0")
        .await;
    let first = consumer.message().await;
    assert_eq!(&first.body[..], b"small");
    // The client vanishes with the rest unread: the writer's write fails.
    drop(consumer);
    tokio::time::timeout(Duration::from_secs(30), session)
        .await
        .expect("the session ends")
        .unwrap();
    let queue = broker
        .services()
        .vhosts
        .select(Some("/"))
        .unwrap()
        .queue("/queue/w")
        .expect("the queue");
    assert_eq!(
        queue.depth(),
        (2, 0),
        "the big message and the empty one are back"
    );
    let (mut next, _n) = broker.connected(64 * 1024).await;
    next.send("SUBSCRIBE\nid:s\ndestination:/queue/w\n\n\0")
        .await;
    let again = next.message().await;
    assert_eq!(
        again.body.len(),
        4096,
        "the small message was not handed back"
    );
    assert_eq!(
        again.get("redelivered"),
        None,
        "it never reached a client whole"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_connect_is_refused_after_the_timeout() {
    let mut config = Config::defaults();
    config.connect_timeout_ms = 3_000;
    let broker = Broker::new(config);
    let (mut client, session) = broker.open(64 * 1024);
    let started = tokio::time::Instant::now();
    let error = client.frame().await.expect("an ERROR");
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(
        error.get("message").unwrap_or_default().contains("CONNECT"),
        "{error:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(3_000) && waited < Duration::from_millis(3_100),
        "refused after {waited:?}"
    );
    assert!(client.frame().await.is_none(), "closed after the ERROR");
    session.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_its_heart_beat_grace_and_one_that_beats_is_not() {
    let mut config = Config::defaults();
    config.heartbeat_receive_ms = 1_000;
    config.heartbeat_grace = 2.0;
    let broker = Broker::new(config);
    let connect = "CONNECT\naccept-version:1.2\nhost:/\nheart-beat:1000,0\n\n\0";

    // This one beats every 800 ms, well inside the 2 s of silence allowed, all along.
    let (mut beating, beating_session) = broker.open(64 * 1024);
    beating.send(connect).await;
    assert_eq!(beating.frame().await.unwrap().command, Command::Connected);
    let beater = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(800)).await;
            beating.send("\n").await;
        }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!beating_session.is_finished(), "a beating client stays");

    // This one says it will beat every second, then says nothing.
    let (mut silent, silent_session) = broker.open(64 * 1024);
    silent.send(connect).await;
    assert_eq!(silent.frame().await.unwrap().command, Command::Connected);
    let started = tokio::time::Instant::now();
    let error = silent.frame().await.expect("an ERROR");
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .contains("heart-beat"),
        "{error:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2_000) && waited < Duration::from_millis(2_100),
        "closed after {waited:?} of silence"
    );
    assert!(silent.frame().await.is_none(), "closed after the ERROR");
    silent_session.await.expect("session ends");
    assert!(
        !beating_session.is_finished(),
        "the other session is untouched"
    );
    beater.abort();
}

#[tokio::test(start_paused = true)]
async fn a_member_silenced_by_heart_beat_timeout_quits_the_room_for_those_who_stay() {
    let mut config = Config::defaults();
    config.presence = vec!["/topic/room.*".into()];
    config.heartbeat_receive_ms = 1_000;
    config.heartbeat_grace = 2.0;
    let broker = Broker::new(config);
    let (mut stays, _stays) = broker.connected(64 * 1024).await;
    stays
        .send("SUBSCRIBE\nid:0\ndestination:/topic/room.1\n\n\0")
        .await;
    let enter = stays.message().await;
    assert_eq!(enter.get("presence"), Some("enter"));

    let (mut silent, silent_session) = broker.open(64 * 1024);
    silent
        .send("CONNECT\naccept-version:1.2\nhost:/\nheart-beat:1000,0\n\n\0")
        .await;
    assert_eq!(silent.frame().await.unwrap().command, Command::Connected);
    silent
        .send("SUBSCRIBE\nid:0\ndestination:/topic/room.1\nreceipt:r\n\n\0")
        .await;
    let enter = stays.message().await;
    assert_eq!(
        (enter.get("presence"), enter.get("presence-count")),
        (Some("enter"), Some("2"))
    );
    let started = tokio::time::Instant::now();
    let quit = stays.message().await;
    assert_eq!(
        (quit.get("presence"), quit.get("presence-count")),
        (Some("quit"), Some("1")),
        "{quit:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2_000),
        "only after the grace"
    );
    silent_session.await.expect("the silent session ended");
    assert_eq!(
        broker
            .services()
            .vhosts
            .routers()
            .map(|r| r.presence_members())
            .sum::<usize>(),
        1
    );
}
