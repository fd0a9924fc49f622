// BullMQ (Node) side of the arqscale benchmarks: the same actions as pyclient.py, plus the worker.
//
//   node bench/bullmq_bench.mjs worker  URL --concurrency C
//   node bench/bullmq_bench.mjs fill    URL --n N [--task noop|sleep]
//   node bench/bullmq_bench.mjs enqueue URL --mode single|bulk --n N --batch B
//   node bench/bullmq_bench.mjs latency URL --samples S --gap SECONDS
//   node bench/bullmq_bench.mjs trickle URL --rate R --seconds S   (noop jobs one at a time, R a second)
//
// The worker's processor mirrors bench/tasks.py: `noop` marks the first job (one SET NX per process),
// `stamp` pushes start - enqueued_at (seconds) onto bench:lat, `sleep` marks like `noop` then waits 50 ms
// (the I/O-bound load). Job options are BullMQ's defaults
// (completed jobs are kept, like arq's results).
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const QUEUE = "bench";
const FIRST_KEY = "bench:first";
const LATENCY_KEY = "bench:lat";
const WARMUP = 20;
const SLEEP_S = 0.05;

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

function parse(argv) {
  const [action, url, ...rest] = argv;
  const opts = {
    action, url, concurrency: 1, n: 1000, mode: "single", task: "noop", batch: 100, samples: 200, gap: 0.02,
    rate: 100, seconds: 8,
  };
  for (let i = 0; i < rest.length; i += 2) {
    const key = rest[i].replace(/^--/, "");
    opts[key] = key === "mode" || key === "task" ? rest[i + 1] : Number(rest[i + 1]);
  }
  return opts;
}

const connect = (url) => new IORedis(url, { maxRetriesPerRequest: null });

async function worker(opts) {
  const side = connect(opts.url);
  let started = false;
  const w = new Worker(
    QUEUE,
    async (job) => {
      if (job.name === "stamp") {
        const t = now();
        await side.rpush(LATENCY_KEY, String(t - job.data.t));
        return;
      }
      if (!started) {
        started = true;
        await side.set(FIRST_KEY, String(now()), "NX");
      }
      if (job.name === "sleep") await sleep(SLEEP_S);
    },
    { connection: connect(opts.url), concurrency: opts.concurrency },
  );
  const stop = async () => {
    await w.close();
    side.disconnect();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function withQueue(opts, fn) {
  const queue = new Queue(QUEUE, { connection: connect(opts.url) });
  await queue.waitUntilReady();
  try {
    return await fn(queue);
  } finally {
    await queue.close();
  }
}

const noops = (n, name = "noop") => Array.from({ length: n }, () => ({ name, data: {} }));

async function fill(queue, opts) {
  const start = performance.now();
  for (let done = 0; done < opts.n; done += 1000) await queue.addBulk(noops(Math.min(1000, opts.n - done), opts.task));
  return { jobs: opts.n, seconds: (performance.now() - start) / 1000 };
}

async function enqueue(queue, opts) {
  for (let i = 0; i < WARMUP; i++) await queue.add("noop", {});
  const start = performance.now();
  if (opts.mode === "single") {
    for (let i = 0; i < opts.n; i++) await queue.add("noop", {});
  } else {
    for (let done = 0; done < opts.n; done += opts.batch) {
      await queue.addBulk(noops(Math.min(opts.batch, opts.n - done)));
    }
  }
  const seconds = (performance.now() - start) / 1000;
  return { jobs: opts.n, seconds, jobs_per_s: opts.n / seconds };
}

async function latency(queue, opts) {
  for (let i = 0; i < opts.samples; i++) {
    await queue.add("stamp", { t: now() });
    await sleep(opts.gap);
  }
  return { samples: opts.samples };
}

// As bench/idle_herd.py's producer: job k is sent at k / rate seconds, each add awaited before the next.
async function trickle(queue, opts) {
  const start = performance.now();
  let sent = 0;
  while ((performance.now() - start) / 1000 < opts.seconds) {
    const due = Math.floor(((performance.now() - start) / 1000) * opts.rate) + 1;
    for (; sent < due; sent++) await queue.add("noop", {});
    await sleep(Math.max(0, sent / opts.rate - (performance.now() - start) / 1000));
  }
  return { jobs: sent };
}

const opts = parse(process.argv.slice(2));
const actions = { fill, enqueue, latency, trickle };
if (opts.action === "worker") {
  await worker(opts);
} else if (actions[opts.action]) {
  const result = await withQueue(opts, (queue) => actions[opts.action](queue, opts));
  console.log(JSON.stringify(result));
  process.exit(0);
} else {
  console.error(`unknown action ${opts.action}: use worker, fill, enqueue, latency or trickle`);
  process.exit(2);
}
