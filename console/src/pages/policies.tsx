/** Policies: list, create, edit, run now, delete. The API checks every field; its message goes next to the field it names. */
import { useState } from 'preact/hooks';
import type { Policy } from '../../../kernel/model';
import { Api, ApiError } from '../api';
import { ErrorNote, Field, JobLink, Section, Status, usePoll } from '../components';
import { ago } from '../format';
import { blank, bodyOf, formOf, policyField, type PolicyForm } from '../policy-form';

export function PoliciesPage() {
  const policies = usePoll(() => Api.policies(), 5000);
  const [editing, setEditing] = useState<{ creating: boolean; form: PolicyForm }>({
    creating: true,
    form: blank,
  });
  const [errors, setErrors] = useState<Partial<Record<string, string>>>({});
  const [note, setNote] = useState<preact.ComponentChildren>();
  const [actionError, setActionError] = useState<ApiError>();
  const set = (k: keyof PolicyForm, v: string) =>
    setEditing((e) => ({ ...e, form: { ...e.form, [k]: v } }));
  const save = async (e: Event) => {
    e.preventDefault();
    setErrors({});
    try {
      const body = bodyOf(editing.form, editing.creating);
      if (editing.creating) await Api.createPolicy(body);
      else await Api.updatePolicy(editing.form.name, body);
      setNote(`policy ${editing.form.name} ${editing.creating ? 'created' : 'saved'}`);
      setEditing({ creating: true, form: blank });
      policies.reload();
    } catch (err) {
      const a = err as ApiError;
      setErrors({ [policyField(a.message)]: a.message });
    }
  };
  const act = async (
    what: () => Promise<unknown>,
    done: (out: unknown) => preact.ComponentChildren,
  ) => {
    setActionError(undefined);
    try {
      setNote(done(await what()));
      policies.reload();
    } catch (err) {
      setActionError(err as ApiError);
    }
  };
  const input = (k: keyof PolicyForm, extra: Record<string, unknown> = {}) => (
    <input
      name={k}
      value={editing.form[k]}
      onInput={(e) => set(k, e.currentTarget.value)}
      {...(errors[k] ? { 'aria-invalid': true } : {})}
      {...extra}
    />
  );
  return (
    <>
      <Section title="Policies" id="policy-list">
        <ErrorNote error={policies.error ?? actionError} />
        {note ? <p class="note">{note}</p> : null}
        <table>
          <thead>
            <tr>
              <th>Policy</th>
              <th>Targets</th>
              <th>Schedule</th>
              <th>Retention</th>
              <th>Runs</th>
              <th>Last run</th>
              <th>Next run</th>
              <th>Attention</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(policies.data ?? []).map((p) => {
              const s = p as Policy & { lastStatus?: string };
              return (
                <tr key={p.name} data-policy={p.name} class={p.flag ? 'flagged' : ''}>
                  <td>{p.name}</td>
                  <td>{p.targets.join(' ')}</td>
                  <td class="mono">
                    {p.schedule} {p.timezone}
                  </td>
                  <td>
                    {Object.entries(p.retention)
                      .map(([k, v]) => `${k.replace(/^keep/, '').toLowerCase()}=${v}`)
                      .join(' ') || 'all'}
                  </td>
                  <td>{p.runs}</td>
                  <td>
                    {s.lastStatus ? <Status status={s.lastStatus} /> : null} {ago(p.lastRunAt)}
                    {p.lastJobId ? (
                      <div>
                        <JobLink jobId={p.lastJobId} />
                      </div>
                    ) : null}
                  </td>
                  <td title={p.nextRunAt}>{ago(p.nextRunAt)}</td>
                  <td>
                    {p.flag ? <span class="flag">⚠ {p.flag}</span> : <span class="muted">ok</span>}
                  </td>
                  <td class="actions">
                    <button
                      class="outline run"
                      onClick={() =>
                        act(
                          () => Api.runPolicy(p.name),
                          (out) => {
                            const jobs = (out as { jobs?: Array<{ jobId: string }> }).jobs ?? [];
                            return (
                              <>
                                {p.name} runs:{' '}
                                {jobs.map((j) => (
                                  <JobLink key={j.jobId} jobId={j.jobId} />
                                ))}
                              </>
                            );
                          },
                        )
                      }
                    >
                      Run now
                    </button>
                    <button
                      class="outline secondary edit"
                      onClick={() => setEditing({ creating: false, form: formOf(p) })}
                    >
                      Edit
                    </button>
                    <button
                      class="outline contrast delete"
                      onClick={() =>
                        confirm(`Delete policy ${p.name}? Its points stay.`) &&
                        act(
                          () => Api.deletePolicy(p.name),
                          () => `policy ${p.name} deleted`,
                        )
                      }
                    >
                      Delete
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </Section>
      <Section
        title={editing.creating ? 'New policy' : `Edit ${editing.form.name}`}
        id="policy-form"
      >
        <form onSubmit={save} noValidate class="policy-form">
          <div class="grid">
            <Field label="Name" name="name" error={errors.name}>
              {input('name', editing.creating ? {} : { readOnly: true })}
            </Field>
            <Field
              label="Targets or selectors"
              name="targets"
              error={errors.targets}
              hint="docker:web docker:app=shop"
            >
              {input('targets')}
            </Field>
          </div>
          <div class="grid">
            <Field
              label="Schedule"
              name="schedule"
              error={errors.schedule}
              hint="cron(0 3 * * ? *), rate(6 hours), at(2027-01-01T03:00:00)"
            >
              {input('schedule')}
            </Field>
            <Field label="Time zone" name="timezone" error={errors.timezone}>
              {input('timezone')}
            </Field>
          </div>
          <div class="grid">
            <Field label="Keep last" name="keepLast" error={errors.keepLast}>
              {input('keepLast', { inputMode: 'numeric' })}
            </Field>
            <Field label="Keep daily" name="keepDaily" error={errors.keepDaily}>
              {input('keepDaily', { inputMode: 'numeric' })}
            </Field>
            <Field label="Keep weekly" name="keepWeekly" error={errors.keepWeekly}>
              {input('keepWeekly', { inputMode: 'numeric' })}
            </Field>
            <Field label="Keep monthly" name="keepMonthly" error={errors.keepMonthly}>
              {input('keepMonthly', { inputMode: 'numeric' })}
            </Field>
            <Field label="Verify every Nth run" name="verifyEvery" error={errors.verifyEvery}>
              {input('verifyEvery', { inputMode: 'numeric' })}
            </Field>
          </div>
          {errors.form ? <p class="field-error">{errors.form}</p> : null}
          <button type="submit">{editing.creating ? 'Create policy' : 'Save'}</button>{' '}
          {!editing.creating ? (
            <button
              type="button"
              class="secondary"
              onClick={() => setEditing({ creating: true, form: blank })}
            >
              Cancel editing
            </button>
          ) : null}
        </form>
      </Section>
    </>
  );
}
