/**
 * A job's agent log (GET /jobs/{id}/log): the lines its agents logged while they ran its tasks
 * (agents/core/task-log.ts writes them to the catalog in batches), merged into one list in the
 * order they were logged. Read-only.
 *
 * Order: each task's lines keep the order its agent logged them in (claim, batch `seq`, place
 * in the batch); the tasks' lists are merged by time, an earlier task first on a tie. A job of
 * many tasks answers with its newest MAX_JOB_LOG_LINES lines and says how many older ones it
 * left out (`omitted`); each task's own cap is counted in `dropped`.
 */
import type { Catalog } from '../../kernel/catalog';
import { NotFoundError } from '../../kernel/errors';
import type { JobLog, JobLogLine, TaskLogBatch } from '../../kernel/model';

/** At most this many lines in one answer (10 tasks at their cap; ~3 MB of JSON at most). */
export const MAX_JOB_LOG_LINES = 5000;

/** One task's lines in the order its agent logged them (batches by `seq`). */
function taskLines(batches: readonly TaskLogBatch[]): JobLogLine[] {
  return [...batches]
    .sort((a, b) => a.seq - b.seq)
    .flatMap((b) =>
      b.lines.map((l) => ({ ...l, agent: b.agent, target: b.target, claimId: b.claimId })),
    );
}

/** Merges lists that are each in order into one by `at`, the earlier list first on a tie. */
function mergeByTime(lists: JobLogLine[][]): JobLogLine[] {
  const heads = lists.map(() => 0);
  const out: JobLogLine[] = [];
  for (;;) {
    let pick = -1;
    for (let i = 0; i < lists.length; i++) {
      const line = lists[i]![heads[i]!];
      if (line && (pick < 0 || line.at < lists[pick]![heads[pick]!]!.at)) pick = i;
    }
    if (pick < 0) return out;
    out.push(lists[pick]![heads[pick]!++]!);
  }
}

export async function getJobLog(catalog: Catalog, jobId: string): Promise<JobLog> {
  const job = await catalog.getJob(jobId);
  if (!job) throw new NotFoundError(`no such job: ${jobId}`);
  const byClaim = new Map<string, TaskLogBatch[]>();
  let dropped = 0;
  for (const batch of await catalog.listTaskLogs(jobId)) {
    byClaim.set(batch.claimId, [...(byClaim.get(batch.claimId) ?? []), batch]);
  }
  const lists: JobLogLine[][] = [];
  for (const batches of byClaim.values()) {
    dropped += Math.max(0, ...batches.map((b) => b.dropped ?? 0));
    lists.push(taskLines(batches));
  }
  // Tasks in the order they began logging.
  lists.sort((a, b) => (a[0]?.at ?? '').localeCompare(b[0]?.at ?? ''));
  const lines = mergeByTime(lists);
  const omitted = Math.max(0, lines.length - MAX_JOB_LOG_LINES);
  return { jobId, lines: omitted > 0 ? lines.slice(omitted) : lines, dropped, omitted };
}
