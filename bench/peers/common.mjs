// Command-line plumbing shared by the Node contestants of `make bench`.
// Each contestant script is run as `node SCRIPT COMMAND URL [--name value]...`
// with COMMAND one of setup (install its schema), enqueue (add --jobs no-op
// jobs in one call, hence one transaction) and work (run one worker process
// until SIGTERM). Nothing here may log a line per job.

export function parseCommandLine(argv) {
  const [command, connectionString, ...rest] = argv;
  if (!command || !connectionString) {
    throw new Error("usage: SCRIPT setup|enqueue|work CONNECTION_STRING [--name value]...");
  }
  const options = {};
  for (let i = 0; i < rest.length; i += 2) {
    const name = rest[i];
    const value = rest[i + 1];
    if (!name.startsWith("--") || value === undefined) {
      throw new Error(`expected --name value pairs, got ${rest.slice(i).join(" ")}`);
    }
    options[name.slice(2)] = Number(value);
    if (Number.isNaN(options[name.slice(2)])) {
      throw new Error(`${name} takes a number, got ${value}`);
    }
  }
  return { command, connectionString, options };
}

export function say(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

export async function main(commands) {
  const { command, connectionString, options } = parseCommandLine(process.argv.slice(2));
  const run = commands[command];
  if (!run) {
    throw new Error(`unknown command ${command} (choose from ${Object.keys(commands).join(", ")})`);
  }
  await run(connectionString, options);
}
