/**
 * Throughput of the content-defined chunker on this machine: chunks 1 GiB of pseudo-random data
 * (incompressible, so every cut is content-defined) fed in 8 MiB reads, and prints MB/s and the
 * chunk-size distribution. A script, not a test:
 *
 *   npx tsx test/bench/chunker-bench.ts [GiB] [runs]
 *
 * The data is generated into one reused 8 MiB block (chunkStream copies what it is given); the
 * generation is timed apart and subtracted, so the figures are chunkStream alone: buffering, the
 * cut-point search and copying each chunk out. Each figure is given against wall time and against
 * the process's CPU time: on this shared 2-core machine other work steals the core, and CPU time
 * is the steadier measure of the code. A last run feeds 64 KiB reads, as fs.createReadStream does,
 * and "findBoundary" is the cut-point search alone over one in-memory buffer.
 * Target on Node 20: ≥ 1,000 MB/s (shared/LOCAL-STACK.md).
 */
import { chunkStream, findBoundary } from '../../agents/repo/chunker';
import { DEFAULT_CHUNKING } from '../../agents/repo/types';

const MiB = 1024 * 1024;
const BLOCK = 8 * MiB;
const gib = Number(process.argv[2] ?? 1);
const runs = Number(process.argv[3] ?? 3);
const total = Math.round(gib * 1024) * MiB;

/** Wall and CPU seconds since an origin. */
class Clock {
  private readonly wall = process.hrtime.bigint();
  private readonly cpu = process.cpuUsage();
  elapsed(): { wall: number; cpu: number } {
    const { user, system } = process.cpuUsage(this.cpu);
    return { wall: Number(process.hrtime.bigint() - this.wall) / 1e9, cpu: (user + system) / 1e6 };
  }
}

/** xorshift128: fast, seeded, good enough to look random to a 32-byte rolling hash. */
function makeFill(seed: number) {
  let a = seed | 0 || 1;
  let b = 0x6c07_8965;
  let c = 0x2f6b_7d1e;
  let d = 0x1b87_3593;
  return (block: Uint8Array) => {
    const words = new Int32Array(block.buffer, block.byteOffset, block.length >>> 2);
    for (let i = 0; i < words.length; i++) {
      const t = a ^ (a << 11);
      a = b;
      b = c;
      c = d;
      d = d ^ (d >>> 19) ^ t ^ (t >>> 8);
      words[i] = d;
    }
  };
}

interface Run {
  wall: number;
  cpu: number;
  sizes: number[];
}

async function run(bytes: number, seed: number, readSize = BLOCK): Promise<Run> {
  const fill = makeFill(seed);
  const block = new Uint8Array(BLOCK);
  const generation = { wall: 0, cpu: 0 };
  async function* source() {
    for (let done = 0; done < bytes; done += BLOCK) {
      const clock = new Clock();
      fill(block);
      const spent = clock.elapsed();
      generation.wall += spent.wall;
      generation.cpu += spent.cpu;
      const size = Math.min(BLOCK, bytes - done);
      for (let at = 0; at < size; at += readSize) {
        yield block.subarray(at, Math.min(size, at + readSize));
      }
    }
  }
  const sizes: number[] = [];
  const clock = new Clock();
  for await (const chunk of chunkStream(source(), DEFAULT_CHUNKING)) sizes.push(chunk.length);
  const { wall, cpu } = clock.elapsed();
  return { wall: wall - generation.wall, cpu: cpu - generation.cpu, sizes };
}

function scanOnly(bytes: number): { wall: number; cpu: number } {
  const buf = new Uint8Array(bytes);
  makeFill(7)(buf);
  const clock = new Clock();
  for (let pos = 0; pos < bytes;) {
    const cut = findBoundary(buf, pos, bytes, DEFAULT_CHUNKING);
    pos = cut < 0 ? bytes : cut;
  }
  return clock.elapsed();
}

const mbps = (bytes: number, seconds: number) =>
  `${(bytes / 1e6 / seconds).toLocaleString('en-US', { maximumFractionDigits: 0 })} MB/s`;
const kib = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

function distribution(sizes: number[]): string {
  const sorted = [...sizes].sort((x, y) => x - y);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  const mean = sizes.reduce((s, n) => s + n, 0) / sizes.length;
  const sd = Math.sqrt(sizes.reduce((s, n) => s + (n - mean) ** 2, 0) / sizes.length);
  const { minSize, avgSize, maxSize } = DEFAULT_CHUNKING;
  const lines = [
    `chunks ${sizes.length}, mean ${kib(mean)} (${((mean / avgSize) * 100).toFixed(0)} % of avgSize), sd ${kib(sd)}`,
    `min ${kib(sorted[0]!)}, p10 ${kib(q(0.1))}, p50 ${kib(q(0.5))}, p90 ${kib(q(0.9))}, max ${kib(sorted.at(-1)!)}`,
    `cut at maxSize: ${sizes.filter((n) => n === maxSize).length}`,
  ];
  const edges = [minSize, 512 * 1024, avgSize, 1.5 * MiB, 2 * MiB, 3 * MiB, maxSize + 1];
  let from = 0;
  for (const to of edges) {
    const count = sizes.filter((n) => n >= from && n < to).length;
    const bar = '#'.repeat(Math.round((count / sizes.length) * 60));
    lines.push(
      `  [${kib(from).padStart(8)}, ${kib(to).padStart(8)})  ${String(count).padStart(5)} ${bar}`,
    );
    from = to;
  }
  return lines.join('\n');
}

console.log(`Node ${process.version}, params ${JSON.stringify(DEFAULT_CHUNKING)}`);
await run(64 * MiB, 99); // warm up the JIT
const results: Run[] = [];
for (let r = 0; r < runs; r++) {
  const result = await run(total, r + 1);
  results.push(result);
  console.log(
    `run ${r + 1}: ${mbps(total, result.wall)} wall, ${mbps(total, result.cpu)} CPU ` +
      `(${result.wall.toFixed(2)} s wall, ${result.cpu.toFixed(2)} s CPU)`,
  );
}
console.log(
  `chunkStream, ${gib} GiB in 8 MiB reads: median ${mbps(total, median(results.map((r) => r.wall)))} wall, ` +
    `${mbps(total, median(results.map((r) => r.cpu)))} CPU`,
);
const small = await run(total, 99, 64 * 1024);
console.log(
  `chunkStream, ${gib} GiB in 64 KiB reads: ${mbps(total, small.wall)} wall, ${mbps(total, small.cpu)} CPU`,
);
const scanBytes = 256 * MiB;
const scans = [scanOnly(scanBytes), scanOnly(scanBytes)];
console.log(
  `findBoundary alone over ${scanBytes / MiB} MiB in memory: ` +
    `${mbps(scanBytes, Math.min(...scans.map((s) => s.wall)))} wall, ` +
    `${mbps(scanBytes, Math.min(...scans.map((s) => s.cpu)))} CPU`,
);
console.log(distribution(results[0]!.sizes));
