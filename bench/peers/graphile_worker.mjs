// graphile-worker as a contestant of `make bench`: one no-op task, one
// process, the batching settings its performance guide and perfTest use for
// throughput (local queue of 500 with a 10 ms refetch delay, completions and
// failures flushed with no delay), a pool of max(10, concurrency + 2) as its
// docs recommend, and no log line per job.
import { Logger, makeWorkerUtils, run } from "graphile-worker";

import { main, say } from "./common.mjs";

const TASK = "noop";

// Warnings and errors only: a line per job would measure the console.
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`[graphile-worker ${level}] ${message}\n`);
  }
});

async function withUtils(connectionString, fn) {
  const utils = await makeWorkerUtils({ connectionString, logger: quiet });
  try {
    return await fn(utils);
  } finally {
    await utils.release();
  }
}

await main({
  async setup(connectionString) {
    await withUtils(connectionString, (utils) => utils.migrate());
    say({ setup: "graphile-worker" });
  },

  async enqueue(connectionString, { jobs }) {
    const specs = Array.from({ length: jobs }, () => ({ identifier: TASK, payload: {} }));
    const added = await withUtils(connectionString, (utils) => utils.addJobs(specs));
    say({ enqueued: added.length });
  },

  async work(connectionString, options) {
    const concurrency = options.concurrency ?? 10;
    const runner = await run({
      connectionString,
      concurrency,
      maxPoolSize: Math.max(10, concurrency + 2),
      logger: quiet,
      taskList: { [TASK]: async () => {} },
      preset: {
        worker: {
          localQueue: {
            size: options["local-queue"] ?? 500,
            refetchDelay: { durationMs: options["refetch-ms"] ?? 10 },
          },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
        },
      },
    });
    say({ ready: true });
    await runner.promise; // its own SIGTERM handler shuts it down gracefully
  },
});
