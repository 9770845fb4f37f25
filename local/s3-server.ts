/**
 * Child-process entry of the local S3 server (s3rver). It runs in its own process because it
 * needs `node --openssl-legacy-provider` (without it ListObjectsV2 paging answers 500).
 * argv: <port> <directory> <bucket>; the environment's STOWAGE_S3_ACCESS_KEY_ID is the only
 * access key it serves (./access.ts). Prints `ready <port>` on stdout once listening.
 */
import type { Server } from 'node:http';
import S3rver from 's3rver';
import { abortUploads, refuseOverwrites } from './s3-conditional-writes';
import AWSAccount from 's3rver/lib/models/account.js';
import { requireAccessKey } from './access';

const [portText, directory, bucket] = process.argv.slice(2);
const server = new S3rver({
  port: Number(portText),
  address: '127.0.0.1',
  directory: directory!,
  silent: true,
  configureBuckets: [{ name: bucket!, configs: [] }],
});
refuseOverwrites(server);
abortUploads(server);
const accessKeyId = process.env.STOWAGE_S3_ACCESS_KEY_ID;
if (!accessKeyId) throw new Error('STOWAGE_S3_ACCESS_KEY_ID must be set');
// s3rver knows one account; its key is this start's, and the built-in S3RVER key is gone.
AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
AWSAccount.DUMMY_ACCOUNT.createKeyPair(
  accessKeyId,
  process.env.STOWAGE_S3_SECRET_ACCESS_KEY ?? 'unchecked',
);
const address = await server.run();
requireAccessKey((server as unknown as { httpServer: Server }).httpServer, accessKeyId, 'S3');
process.stdout.write(`ready ${address.port}\n`);
const stop = () => void server.close().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// If `stowage start` dies without stopping us (SIGKILL, a crash), do not outlive it holding the port.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop();
}, 500).unref();
