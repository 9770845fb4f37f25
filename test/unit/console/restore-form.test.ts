import { describe, expect, it } from 'vitest';
import {
  emptyForm,
  fieldOfRefusal,
  toBody,
  validate,
  type RestoreForm,
} from '../../../console/src/restore-form';

const form = (overrides: Partial<RestoreForm> = {}): RestoreForm => ({
  ...emptyForm(),
  ...overrides,
});

describe('the restore form', () => {
  it('asks for the new name next to the name field', () => {
    expect(validate(form(), 'docker:web')).toEqual({ name: 'give the new name' });
  });

  it("refuses a name the platform refuses, with the platform's own message", () => {
    expect(validate(form({ name: 'bad name!' }), 'docker:web').name).toMatch(
      /not a valid Docker container name/,
    );
    expect(validate(form({ name: '9lives' }), 'lxd:c1').name).toMatch(/LXD instance name/);
    expect(validate(form({ name: 'relative/x' }), 'path:/srv/a').name).toMatch(/absolute/);
  });

  it('puts a bad remap next to the volume it renames, and a bad port next to the ports', () => {
    const errors = validate(
      form({ name: 'web2', volumes: { data: 'no good', logs: 'fine' }, ports: '80/tcp=http' }),
      'docker:web',
    );
    expect(Object.keys(errors).sort()).toEqual(['ports', 'volumes.data']);
    expect(validate(form({ name: 'web2', ports: '80' }), 'docker:web').ports).toMatch(
      /CONTAINER=HOST/,
    );
  });

  it('needs an agent to restore on another agent, and no name (the same is kept)', () => {
    expect(validate(form({ mode: 'agent' }), 'lxd:c1')).toEqual({
      agent: 'choose the agent to restore on',
    });
    expect(validate(form({ mode: 'agent', agent: 'site-2' }), 'lxd:c1')).toEqual({});
  });

  it('accepts every valid combination without a message', () => {
    for (const name of ['web2', 'a', 'A.b_c-1']) {
      expect(
        validate(form({ name, network: 'backend', ports: '80/tcp=8081 443=' }), 'docker:web'),
      ).toEqual({});
    }
    expect(validate(form({ mode: 'inPlace' }), 'docker:web')).toEqual({});
  });

  it('becomes the POST /restores body the API takes', () => {
    expect(
      toBody(
        form({ name: 'web2', volumes: { data: 'data2', logs: '' }, ports: '80/tcp=8081, 443=' }),
        'rp-1',
        'docker:web',
      ),
    ).toEqual({
      recoveryPointId: 'rp-1',
      name: 'web2',
      volumes: { data: 'data2' },
      ports: { '80/tcp': '8081', '443': '' },
    });
    expect(toBody(form({ mode: 'inPlace', name: 'ignored' }), 'rp-1', 'lxd:c1')).toEqual({
      recoveryPointId: 'rp-1',
      inPlace: true,
    });
    expect(
      toBody(form({ mode: 'agent', agent: 'site-2', state: 'stopped' }), 'rp-1', 'lxd:c1'),
    ).toEqual({
      recoveryPointId: 'rp-1',
      to: 'lxd:c1@site-2',
      state: 'stopped',
    });
  });

  it("puts the API's refusal next to the field it names", () => {
    const f = form({ name: 'web2' });
    expect(fieldOfRefusal('NameTaken', 'docker:web2 exists already', f)).toBe('name');
    expect(
      fieldOfRefusal(
        'ValidationError',
        'bad request body: volumes.data: not a valid Docker name',
        f,
      ),
    ).toBe('volumes.data');
    expect(
      fieldOfRefusal('ValidationError', 'bad request body: network: not a valid Docker name', f),
    ).toBe('network');
    expect(fieldOfRefusal('AgentUnavailable', 'no agent site-2', form({ mode: 'agent' }))).toBe(
      'agent',
    );
    expect(fieldOfRefusal('PointNotFound', 'recovery point rp-1 does not exist', f)).toBe('form');
  });
});
