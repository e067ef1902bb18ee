/**
 * Helpers for the transparency-log tests: run the `sovra` CLI as a child process (asynchronously, so
 * an in-process test gateway keeps serving it), write a config file for it, fetch and open
 * checkpoints, and collect every entry of a log through its tiles.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import {
  createEd25519Verifier,
  createFetchTileReader,
  openCheckpoint,
  verifyLogFromTiles,
  type Checkpoint,
} from '@sovra/tlog';

/** Path of `bin/sovra.mjs`. */
export const SOVRA_BIN = resolve(fileURLToPath(import.meta.url), '../../../bin/sovra.mjs');

/** Result of a CLI run. */
export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `sovra ARGS…` in `cwd` (killed after `timeoutMs`, default 60 s). */
export function runSovra(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolveRun) => {
    const p = spawn(process.execPath, [SOVRA_BIN, ...args], { cwd, env: { ...process.env, SOVRA_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, out, err });
    });
  });
}

/** Writes `<dir>/cli.yaml` pointing the CLI at the same database (and default key file) as a test gateway. */
export function writeCliConfig(dir: string, database: { url: string; schema?: string }, extra: Record<string, unknown> = {}): string {
  const file = join(dir, 'cli.yaml');
  writeFileSync(file, stringify({ database, logging: { level: 'silent' }, ...extra }));
  return file;
}

/** GETs and opens the checkpoint of the log at `origin` (gateway base URL) with `vkey`. */
export async function fetchCheckpoint(origin: string, vkey: string): Promise<{ note: string; checkpoint: Checkpoint }> {
  const r = await fetch(`${origin}/audit/checkpoint`);
  if (r.status !== 200) throw new Error(`GET /audit/checkpoint: ${r.status}`);
  const note = await r.text();
  return { note, checkpoint: openCheckpoint(note, [createEd25519Verifier(vkey)]).checkpoint };
}

/** Every entry of the log at `origin`, verified against its current checkpoint (full mode). */
export async function allEntries(origin: string, vkey: string): Promise<{ checkpoint: Checkpoint; entries: Buffer[] }> {
  const { checkpoint } = await fetchCheckpoint(origin, vkey);
  const entries: Buffer[] = [];
  await verifyLogFromTiles(checkpoint, createFetchTileReader(`${origin}/audit`, fetch), {
    entries: true,
    onEntry: (_i, e) => {
      entries.push(Buffer.from(e));
    },
  });
  return { checkpoint, entries };
}

/** Polls `fn` every 50 ms until it returns a truthy value, or throws after `timeoutMs`. */
export async function until<T>(fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The decoded record of the log entry whose `id` is `id` (a request id or an admin entry id),
 * waiting (up to `timeoutMs`) until a checkpoint covers it.
 */
export async function auditEntry<T = Record<string, any>>(origin: string, vkey: string, id: string, timeoutMs = 10_000): Promise<T> {
  return until(
    async () => {
      const { entries } = await allEntries(origin, vkey);
      for (const e of entries) {
        const rec = JSON.parse(e.toString('utf8')) as { id?: unknown };
        if (rec.id === id) return rec as T;
      }
      return undefined;
    },
    timeoutMs,
    `audit entry ${id}`,
  );
}
