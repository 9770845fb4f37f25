/** One job: its status and progress, its items, its log lines and its workflow's states. */
import { useState } from 'preact/hooks';
import { Api, ApiError } from '../api';
import {
  ErrorNote,
  jobProgress,
  ProgressLine,
  Section,
  Status,
  TargetLink,
  usePoll,
} from '../components';
import { bytes, duration, time, between } from '../format';
import { logLines, stateVisits } from '../history';

const ACTIVE = ['PENDING', 'RUNNING'];

export function JobPage({ jobId }: { jobId: string }) {
  const job = usePoll(() => Api.job(jobId), 1000, [jobId]);
  const history = usePoll(() => Api.history(jobId), 2000, [jobId]);
  // The agents' lines arrive every second while the job runs; after it ended, rarely.
  const active = !job.data || ACTIVE.includes(job.data.status);
  const agentLog = usePoll(() => Api.log(jobId), active ? 1000 : 10_000, [jobId]);
  const [cancelError, setCancelError] = useState<ApiError>();
  const [cancelAnswer, setCancelAnswer] = useState<string>();
  const j = job.data;
  if (job.error && !j) return <ErrorNote error={job.error} />;
  if (!j) return <p aria-busy="true">Loading {jobId}…</p>;
  const events = history.data?.events ?? [];
  const running = ACTIVE.includes(j.status);
  const cancel = async () => {
    try {
      const out = (await Api.cancel(j.jobId)) as { cancelled?: boolean; message?: string };
      if (out?.cancelled === false && out.message) setCancelAnswer(out.message);
      job.reload();
    } catch (err) {
      setCancelError(err as ApiError);
    }
  };
  return (
    <>
      <Section title={`Job ${j.jobId}`} id="job">
        <dl class="facts">
          <dt>Kind</dt>
          <dd>{j.kind}</dd>
          <dt>Target</dt>
          <dd>{j.kind === 'BACKUP' ? <TargetLink target={j.target} /> : j.target}</dd>
          {j.source ? (
            <>
              <dt>From</dt>
              <dd>
                <TargetLink target={j.source} />
              </dd>
            </>
          ) : null}
          <dt>Status</dt>
          <dd>
            <Status status={j.status} />{' '}
            {running ? (
              <button class="secondary cancel" onClick={cancel}>
                Cancel
              </button>
            ) : null}
          </dd>
          <dt>Agent</dt>
          <dd>{j.agent}</dd>
          <dt>Point</dt>
          <dd class="mono">{j.recoveryPointId ?? '-'}</dd>
          <dt>Created</dt>
          <dd>{time(j.createdAt)}</dd>
          <dt>Ran</dt>
          <dd>
            {j.startedAt
              ? `${time(j.startedAt)} for ${duration(between(j.startedAt, j.endedAt))}`
              : '-'}
          </dd>
          {j.policy ? (
            <>
              <dt>Policy</dt>
              <dd>{j.policy}</dd>
            </>
          ) : null}
        </dl>
        <ErrorNote error={cancelError} />
        {cancelAnswer ? <p class="note">{cancelAnswer}</p> : null}
        {running ? <ProgressLine progress={jobProgress(j)} /> : null}
        {!running && j.progress ? (
          <p class="muted">
            moved {bytes(j.progress.bytesDone)}
            {j.progress.bytesNew !== undefined ? `, ${bytes(j.progress.bytesNew)} new` : ''}
            {j.progress.bytesStored !== undefined
              ? `, ${bytes(j.progress.bytesStored)} stored`
              : ''}
          </p>
        ) : null}
        {j.error ? (
          <p class="error-note">
            <b>{j.error.name}</b>: {j.error.message}
          </p>
        ) : null}
      </Section>
      {j.items?.length ? (
        <Section title="Items" id="items">
          <table>
            <thead>
              <tr>
                <th>Target</th>
                <th>Agent</th>
                <th>Point</th>
                <th>Status</th>
                <th>Progress</th>
              </tr>
            </thead>
            <tbody>
              {j.items.map((i) => (
                <tr key={i.target}>
                  <td>
                    <TargetLink target={i.target} />
                  </td>
                  <td>{i.agent}</td>
                  <td class="mono">{i.status === 'COMPLETED' ? i.recoveryPointId : '-'}</td>
                  <td>
                    <Status status={i.status} />
                  </td>
                  <td>
                    {i.error ? (
                      <span class="error-text">
                        {i.error.name}: {i.error.message}
                      </span>
                    ) : i.status === 'RUNNING' ? (
                      <ProgressLine progress={i.progress} />
                    ) : i.progress ? (
                      bytes(i.progress.bytesDone)
                    ) : (
                      '-'
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Section>
      ) : null}
      <Section title="Log" id="log">
        <ErrorNote error={history.error ?? agentLog.error} />
        <pre class="log">
          {logLines(j, events, agentLog.data?.lines).map((l, n) => (
            <div key={n} class={`log-${l.level}${l.agent ? ' log-agent' : ''}`}>
              {l.at.replace('T', ' ').replace('Z', '')} {l.text}
            </div>
          ))}
        </pre>
        {agentLog.data && agentLog.data.dropped + agentLog.data.omitted > 0 ? (
          <p class="muted">
            {agentLog.data.omitted > 0
              ? `${agentLog.data.omitted} older agent lines not shown. `
              : ''}
            {agentLog.data.dropped > 0
              ? `${agentLog.data.dropped} agent lines past the cap of 500 a task were not kept.`
              : ''}
          </p>
        ) : null}
      </Section>
      <Section title="Workflow states" id="states">
        {history.data?.executionArn ? <p class="mono muted">{history.data.executionArn}</p> : null}
        <table class="states">
          <thead>
            <tr>
              <th>State</th>
              <th>Type</th>
              <th>Entered</th>
              <th>Duration</th>
              <th>Outcome</th>
            </tr>
          </thead>
          <tbody>
            {stateVisits(events).map((v, n) => (
              <tr key={n} class={v.failed ? 'failed' : ''}>
                <td>{v.state}</td>
                <td>{v.type}</td>
                <td>{v.enteredAt.replace('T', ' ').replace('Z', '')}</td>
                <td>{v.seconds !== undefined ? duration(v.seconds) : 'running'}</td>
                <td>
                  {v.failed
                    ? `failed: ${v.failed.error ?? ''} ${v.failed.cause ?? ''}`
                    : v.exitedAt
                      ? 'succeeded'
                      : ''}
                  {v.retries ? ` (retried ${v.retries}×)` : ''}
                  {v.caught ? ' (caught)' : ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </>
  );
}
