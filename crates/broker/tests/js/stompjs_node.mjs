// @stomp/stompjs under Node: connect over ws:// or wss:// (the test CA comes from
// NODE_EXTRA_CA_CERTS), subscribe, publish, receive, disconnect.
// Usage: node stompjs_node.mjs URL
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";

const url = process.argv[2];
const topic = `/topic/stompjs-node-${process.pid}`;
const timer = setTimeout(() => fail("timed out"), 15000);

function fail(reason) {
  console.error(`FAIL: ${reason}`);
  process.exit(1);
}

const client = new Client({
  webSocketFactory: () => new WebSocket(url, ["v12.stomp", "v11.stomp", "v10.stomp"]),
  reconnectDelay: 0,
  heartbeatIncoming: 0,
  heartbeatOutgoing: 0,
  onStompError: (frame) => fail(`ERROR frame: ${frame.headers.message}`),
  onWebSocketError: (event) => fail(`WebSocket error: ${event.message ?? event}`),
});

client.onConnect = (connected) => {
  if (connected.headers.version !== "1.2") fail(`negotiated ${connected.headers.version}`);
  client.subscribe(topic, (message) => {
    if (message.body !== "hello from node") fail(`body ${message.body}`);
    if (message.headers["x-client"] !== "stompjs") fail("user header lost");
    clearTimeout(timer);
    client.deactivate().then(() => {
      console.log(`ok: @stomp/stompjs over ${url.split(":")[0]}`);
      process.exit(0);
    });
  }, { receipt: "subscribed" });
  client.watchForReceipt("subscribed", () => {
    client.publish({ destination: topic, body: "hello from node", headers: { "x-client": "stompjs" } });
  });
};
client.activate();
