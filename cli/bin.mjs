#!/usr/bin/env node
// The `stowage` command, from the TypeScript sources through tsx's loader. `npm run build` makes
// dist/stowage.mjs, the same command as plain JavaScript (no loader: what an agent host runs).
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
