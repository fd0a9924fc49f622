// The Node twin of tests/bullmq_world.py: BullMQ jobs in every state made by the real BullMQ (npm),
// BullMQ's own getJobCounts printed as one JSON line, one job held running until a line on stdin.
//
//   BULLMQ_FROM=bench node tests/bullmq_world.mjs REDIS_URL
//
// BULLMQ_FROM is a folder whose node_modules has bullmq and ioredis (bench/, installed by `npm ci`).
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(resolve(process.env.BULLMQ_FROM ?? "bench", "package.json"));
const { Queue, Worker, FlowProducer } = require("bullmq");
const IORedis = require("ioredis");

const TYPES = ["waiting", "paused", "active", "delayed", "prioritized", "completed", "failed", "waiting-children"];
const url = process.argv[2];
const connect = () => new IORedis(url, { maxRetriesPerRequest: null });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(queue, states, want) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const counts = await queue.getJobCounts(...states);
    if (states.reduce((sum, s) => sum + counts[s], 0) === want) return;
    if (Date.now() > deadline) throw new Error(`BullMQ did not reach ${states} == ${want}`);
    await sleep(20);
  }
}

const node = new Queue("node", { connection: connect() });
let release;
const released = new Promise((r) => (release = r));
const worker = new Worker(
  "node",
  async (job) => {
    if (job.name === "fail") throw new Error("boom");
    if (job.name === "hold") await released;
    return "ok";
  },
  { connection: connect(), concurrency: 1 },
);
for (let i = 0; i < 3; i++) await node.add("ok", { i }, { removeOnComplete: false });
for (let i = 0; i < 2; i++) await node.add("fail", { i }, { attempts: 1, removeOnFail: false });
await waitFor(node, ["completed", "failed"], 5);
await node.add("hold", {});
await waitFor(node, ["active"], 1);
for (let i = 0; i < 4; i++) await node.add("ok", { i });
for (let i = 0; i < 2; i++) await node.add("ok", { later: i }, { delay: 600000 });
for (const p of [1, 5, 5]) await node.add("ok", { p }, { priority: p });
const flow = new FlowProducer({ connection: connect() });
await flow.add({ name: "parent", queueName: "node", data: {}, children: [{ name: "child", queueName: "node-children", data: {} }] });
const held = new Queue("node-held", { connection: connect() });
for (let i = 0; i < 2; i++) await held.add("ok", { i });
await held.pause();
const custom = new Queue("custom", { connection: connect(), prefix: "myapp" });
await custom.add("ok", {});

const queues = { node, "node-held": held, custom };
const counts = {};
for (const [name, q] of Object.entries(queues)) counts[name] = await q.getJobCounts(...TYPES);
console.log(JSON.stringify(counts));

await new Promise((r) => createInterface({ input: process.stdin }).once("line", r).once("close", r));
release();
await worker.close();
for (const q of Object.values(queues)) await q.close();
await flow.close();
process.exit(0);
