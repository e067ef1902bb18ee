#!/usr/bin/env node
// The `sovra` command. Sources are TypeScript, loaded through tsx's ESM hooks.
import { register } from 'tsx/esm/api';

register();
// `sovra keys list | head`: the reader closing the pipe ends the output, not with a stack trace.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
