// pg-boss as a contestant of `make bench`: one no-op queue, one process with
// the throughput settings of its v12 worker options (batches of 100, fetching
// again at once while batches come back full, a 0.5 s poll otherwise, 10
// local workers), everything else at its defaults, no log line per job.
import { PgBoss } from "pg-boss";

import { main, say } from "./common.mjs";

const QUEUE = "bench_noop";

function boss(connectionString) {
  const instance = new PgBoss({ connectionString });
  instance.on("error", (error) => process.stderr.write(`[pg-boss error] ${error}\n`));
  return instance;
}

await main({
  async setup(connectionString) {
    const b = boss(connectionString);
    await b.start();
    await b.createQueue(QUEUE);
    await b.stop({ graceful: false });
    say({ setup: "pg-boss" });
  },

  async enqueue(connectionString, { jobs }) {
    const b = boss(connectionString);
    await b.start();
    try {
      // One insert() is one statement: every job lands in one transaction.
      const ids = await b.insert(QUEUE, Array.from({ length: jobs }, () => ({ data: {} })), {
        returnId: true,
      });
      say({ enqueued: ids ? ids.length : jobs });
    } finally {
      await b.stop({ graceful: false });
    }
  },

  async work(connectionString, options) {
    const b = boss(connectionString);
    await b.start();
    await b.work(
      QUEUE,
      {
        batchSize: options.batch ?? 100,
        burstWhenBatchFull: true,
        pollingIntervalSeconds: options["poll-seconds"] ?? 0.5,
        localConcurrency: options.concurrency ?? 10,
      },
      async () => {},
    );
    say({ ready: true });
    const stop = async () => {
      await b.stop({ graceful: true });
      process.exit(0);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  },
});
