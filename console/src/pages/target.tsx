/** A target's recovery points of both tiers: size, new bytes, duration, and why each is kept. */
import { useState } from 'preact/hooks';
import { Api, ApiError, type Accepted } from '../api';
import { ErrorNote, JobLink, Section, Status, usePoll } from '../components';
import { bytes, duration, time } from '../format';
import { href } from '../route';

export function TargetPage({ target }: { target: string }) {
  const points = usePoll(() => Api.points(target, 1000), 5000, [target]);
  const [started, setStarted] = useState<Accepted>();
  const [error, setError] = useState<ApiError>();
  const backup = async () => {
    setError(undefined);
    try {
      setStarted(await Api.backup({ target }));
    } catch (err) {
      setError(err as ApiError);
    }
  };
  const list = points.data ?? [];
  return (
    <Section title={`Recovery points of ${target}`} id="points">
      <p>
        <button onClick={backup}>Back up now</button>{' '}
        {started ? (
          <span>
            started <JobLink jobId={started.jobId} />
          </span>
        ) : null}
      </p>
      <ErrorNote error={error ?? points.error} />
      {points.data && list.length === 0 ? <p class="muted">No point of {target} yet.</p> : null}
      {list.length > 0 ? (
        <table class="points">
          <thead>
            <tr>
              <th>Point</th>
              <th>Tier</th>
              <th>Created</th>
              <th>Status</th>
              <th>Size</th>
              <th>New</th>
              <th>Stored</th>
              <th>Duration</th>
              <th>Why kept</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((p) =>
              p.tier === 'offsite' ? (
                <tr key={p.recoveryPointId} data-point={p.recoveryPointId}>
                  <td class="mono">
                    {p.recoveryPointId}
                    {p.label ? <span class="tag">{p.label}</span> : null}
                  </td>
                  <td>offsite</td>
                  <td>{time(p.createdAt)}</td>
                  <td>
                    <Status status={p.status} />
                    {p.verifiedAt ? <div class="muted">verified {time(p.verifiedAt)}</div> : null}
                  </td>
                  <td>{bytes(p.bytesRead)}</td>
                  <td>{bytes(p.bytesNew)}</td>
                  <td>{bytes(p.bytesStored)}</td>
                  <td>{duration(p.durationMs / 1000)}</td>
                  <td class={p.retention && !p.retention.keep ? 'flag' : ''}>
                    {p.retention
                      ? p.retention.keep
                        ? p.retention.reasons.join('; ')
                        : `the next prune deletes it (${p.retention.reasons.join('; ') || 'no rule keeps it'})`
                      : 'no policy protects this target: kept until deleted'}
                    {p.retention?.keptUntil ? ` (until ${time(p.retention.keptUntil)})` : ''}
                  </td>
                  <td>
                    <a
                      role="button"
                      class="outline"
                      href={href({ page: 'restore', point: p.recoveryPointId })}
                    >
                      Restore…
                    </a>
                  </td>
                </tr>
              ) : (
                <tr key={p.recoveryPointId ?? (p as { snapshotId?: string }).snapshotId}>
                  <td class="mono">
                    {(p as { snapshotId?: string }).snapshotId ?? p.recoveryPointId}
                  </td>
                  <td>snapshot</td>
                  <td>{time(p.createdAt)}</td>
                  <td>
                    <Status status={p.status} />
                  </td>
                  <td colSpan={4} class="muted">
                    on the host's own storage{p.stateful ? ', with memory state' : ''}
                  </td>
                  <td>{p.expiresAt ? `until it expires ${time(p.expiresAt)}` : 'never expires'}</td>
                  <td />
                </tr>
              ),
            )}
          </tbody>
        </table>
      ) : null}
    </Section>
  );
}
