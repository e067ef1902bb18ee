// Entry of Sovra's worker threads: registers tsx's TypeScript loader in this thread (a worker does
// not inherit the hooks the main thread registered), then loads the TypeScript module named by
// `workerData.entry` (a file: URL).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
