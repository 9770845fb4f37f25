// Worker-thread entry of the codec pool: loads the TypeScript module through tsx, since worker
// threads do not inherit the loader the main thread registered.
import { register } from 'tsx/esm/api';

register();
const worker = await import('./codec-worker.ts');
export const hash = worker.hash;
export const seal = worker.seal;
export const openRange = worker.openRange;
