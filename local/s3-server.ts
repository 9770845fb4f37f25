/**
 * Child-process entry of the local S3 server (s3rver). It runs in its own process because it
 * needs `node --openssl-legacy-provider` (without it ListObjectsV2 paging answers 500).
 * argv: <port> <directory> <bucket>. Prints `ready <port>` on stdout once listening.
 */
import S3rver from 's3rver';
import { refuseOverwrites } from './s3-conditional-writes';

const [portText, directory, bucket] = process.argv.slice(2);
const server = new S3rver({
  port: Number(portText),
  address: '127.0.0.1',
  directory: directory!,
  silent: true,
  configureBuckets: [{ name: bucket!, configs: [] }],
});
refuseOverwrites(server);
const address = await server.run();
process.stdout.write(`ready ${address.port}\n`);
const stop = () => void server.close().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// If `stowage start` dies without stopping us (SIGKILL, a crash), do not outlive it holding the port.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop();
}, 500).unref();
