// @stomp/stompjs in headless Chromium (Debian's, driven by playwright-core): a page
// connects to Postbox over ws://, subscribes, publishes and receives its message.
// Usage: node stompjs_browser.mjs URL
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const url = process.argv[2];
// The package's exports map hides its browser bundle, so read it by path.
const bundle = readFileSync(
  new URL("./node_modules/@stomp/stompjs/bundles/stomp.umd.min.js", import.meta.url),
  "utf8",
);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.setContent(`<html><body><script>${bundle}</script></body></html>`);
  const result = await page.evaluate(async (url) => {
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve("timed out"), 10000);
      const client = new StompJs.Client({
        brokerURL: url,
        reconnectDelay: 0,
        onStompError: (frame) => resolve(`ERROR ${frame.headers.message}`),
        onWebSocketError: () => resolve("WebSocket error"),
      });
      client.onConnect = () => {
        const topic = "/topic/browser";
        client.subscribe(topic, (message) => {
          clearTimeout(timer);
          client.deactivate();
          resolve(`received ${message.body}`);
        }, { receipt: "ready" });
        client.watchForReceipt("ready", () => {
          client.publish({ destination: topic, body: "hello from chromium" });
        });
      };
      client.activate();
    });
  }, url);
  if (result !== "received hello from chromium") {
    console.error(`FAIL: ${result}`);
    process.exit(1);
  }
  console.log("ok: @stomp/stompjs in headless Chromium");
} finally {
  await browser.close();
}
