/**
 * Shoal's node mirror: `node mirror/main.ts [serve|configure|cleanup] [flags]`.
 * Parses flags (env fallbacks SHOAL_*), then hands over to the subcommand.
 */
import { UsageError, flagsHelp, parseFlags } from '../shared/cli.ts';
import { createLogger } from '../shared/log.ts';
import { shutdownSignal } from '../shared/shutdown.ts';
import { cleanup, configure } from './containerd-config/index.ts';
import { COMMANDS, type CommandName } from './options.ts';
import { serve } from './serve.ts';

function usage(command?: CommandName): string {
  if (command !== undefined) {
    return `usage: node mirror/main.ts ${command} [flags]\n\n${COMMANDS[command].summary}\n\nflags:\n${flagsHelp(COMMANDS[command].flags)}\n`;
  }
  const list = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`).join('\n');
  return `usage: node mirror/main.ts [command] [flags]\n\ncommands:\n${list}\n\n'node mirror/main.ts COMMAND --help' lists a command's flags.\n`;
}

// kad-dht keeps each provider record's few-byte value as a view into Node's Buffer
// pool, which pins the whole slab (64 KiB in Node 24): with 5000 records that was
// ~130 MiB of external memory; 8 KiB slabs cut it to ~34 MiB (npm run bench).
Buffer.poolSize = 8 * 1024;

const argv = process.argv.slice(2);
const first = argv[0];
const named = first !== undefined && first in COMMANDS;
const command: CommandName = named ? (first as CommandName) : 'serve';

async function main(): Promise<number> {
  const args = named ? argv.slice(1) : argv;
  if (first !== undefined && !first.startsWith('-') && !named) throw new UsageError(`unknown command "${first}" (commands: ${Object.keys(COMMANDS).join(", ")})`);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(usage(named ? command : undefined));
    return 0;
  }
  switch (command) {
    case 'serve': {
      const options = parseFlags(COMMANDS.serve.flags, args, process.env);
      const logger = createLogger({ level: options.logLevel }, { component: 'mirror' });
      const mirror = await serve(options, logger);
      await shutdownSignal(logger);
      await mirror.close();
      return 0;
    }
    case 'configure': {
      const options = parseFlags(COMMANDS.configure.flags, args, process.env);
      const logger = createLogger({ level: options.logLevel }, { component: 'configure' });
      await configure(options, logger);
      return 0;
    }
    case 'cleanup': {
      const options = parseFlags(COMMANDS.cleanup.flags, args, process.env);
      const logger = createLogger({ level: options.logLevel }, { component: 'cleanup' });
      await cleanup(options, logger);
      return 0;
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`shoal mirror ${command}: ${err.message}\n'node mirror/main.ts ${command} --help' lists its flags.\n`);
      process.exit(2);
    }
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'fatal', error: (err as Error).message })}\n`);
    process.exit(1);
  },
);
