/**
 * The vCloud Director client (agents/drivers/vsphere/vcd.ts) against a local HTTP fake
 * (test/fixtures/vcd-fake.ts), built from the API's documented payloads: no vCD simulator
 * exists, so what is checked here is the client's side of the documented contract (login and
 * re-login, the query service, maintenance mode on and off around work that fails, metadata,
 * lease, networks, VDC quotas and org recorded, metadata and lease put back; the VDC's and org's
 * settings put back through the admin views, the allocation model reported as fixed, a refusal
 * reported; VMs imported as a new vApp through the admin extension), not a real vCD's behaviour.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { VcdClient } from '../../agents/drivers/vsphere/vcd';
import { makeFakeVapp, startVcdFake, type VcdFake } from '../fixtures/vcd-fake';

let fake: VcdFake;
let client: VcdClient;

beforeAll(async () => {
  fake = await startVcdFake();
});

beforeEach(() => {
  fake.forbidAdmin = false;
  fake.imports.length = 0;
  fake.vapps.clear();
  fake.calls.length = 0;
  fake.vapps.set('a1', makeFakeVapp());
  client = new VcdClient({ url: fake.url, user: fake.user, password: fake.password });
});

afterAll(async () => {
  client?.close();
  await fake?.close();
});

describe('vCloud Director client (against a fake built from the documented payloads)', () => {
  it('finds a vApp by name, and says when vCD has none', async () => {
    expect(await client.findVapp('shop')).toBe('/api/vApp/vapp-a1');
    await expect(client.findVapp('nope')).rejects.toMatchObject({ name: 'TargetNotFound' });
    expect(fake.calls[0]).toBe('POST /cloudapi/1.0.0/sessions');
  });

  it('puts the vApp in maintenance mode for the work and takes it out again, also when the work fails', async () => {
    const href = await client.findVapp('shop');
    const seen = await client.inMaintenance(
      href,
      async () => fake.vapps.get('a1')!.inMaintenanceMode,
      () => undefined,
    );
    expect(seen).toBe(true);
    expect(fake.vapps.get('a1')!.inMaintenanceMode).toBe(false);

    await expect(
      client.inMaintenance(
        href,
        () => Promise.reject(new Error('the disk read failed')),
        () => undefined,
      ),
    ).rejects.toThrow('the disk read failed');
    expect(fake.vapps.get('a1')!.inMaintenanceMode).toBe(false);
    expect(fake.calls.filter((c) => c.includes('MaintenanceMode'))).toEqual([
      'POST /api/vApp/vapp-a1/action/enterMaintenanceMode',
      'POST /api/vApp/vapp-a1/action/exitMaintenanceMode',
      'POST /api/vApp/vapp-a1/action/enterMaintenanceMode',
      'POST /api/vApp/vapp-a1/action/exitMaintenanceMode',
    ]);
  });

  it('records the vApp metadata, lease and networks with its VDC (metadata, quotas) and org', async () => {
    const record = await client.record(await client.findVapp('shop'));
    expect(record.vapp).toMatchObject({
      name: 'shop',
      description: 'the shop',
      metadata: [
        { key: 'owner', value: 'team-shop', type: 'MetadataStringValue' },
        {
          key: 'replicas',
          value: '3',
          type: 'MetadataNumberValue',
          domain: { visibility: 'READWRITE', domain: 'GENERAL' },
        },
      ],
      lease: { deploymentLeaseInSeconds: 604800, storageLeaseInSeconds: 2592000 },
      networkConfig: [{ networkName: 'acme-net', configuration: { fenceMode: 'bridged' } }],
    });
    expect(record.vdc).toMatchObject({
      name: 'acme-vdc',
      metadata: [{ key: 'cost-center', value: 'cc-7' }],
      quotas: { vmQuota: 20, networkQuota: 5, allocationModel: 'AllocationVApp' },
    });
    expect(record.org).toMatchObject({ name: 'acme', metadata: [{ key: 'tier', value: 'gold' }] });
  });

  it('puts the recorded metadata and lease back onto a vApp that lost them, waiting for the tasks', async () => {
    const record = await client.record(await client.findVapp('shop'));
    fake.vapps.set(
      'a2',
      makeFakeVapp({
        id: 'a2',
        name: 'shop-restored',
        metadata: [],
        lease: { deploymentLeaseInSeconds: 0, storageLeaseInSeconds: 0 },
      }),
    );
    await client.putBack('/api/vApp/vapp-a2', record);
    const restored = fake.vapps.get('a2')!;
    expect(
      restored.metadata.map((m) => [m.key, (m.typedValue as { value: unknown }).value]),
    ).toEqual([
      ['owner', 'team-shop'],
      ['replicas', '3'],
    ]);
    expect(restored.lease).toEqual(record.vapp.lease);
    expect(fake.calls.filter((c) => c.startsWith('GET /api/task/'))).toHaveLength(2);
  });

  it('logs in again once when the session expired, and refuses a wrong password with a clear message', async () => {
    await client.findVapp('shop');
    fake.expireToken();
    expect(await client.findVapp('shop')).toBe('/api/vApp/vapp-a1');
    expect(fake.calls.filter((c) => c === 'POST /cloudapi/1.0.0/sessions')).toHaveLength(2);

    const wrong = new VcdClient({ url: fake.url, user: fake.user, password: 'nope' });
    await expect(wrong.findVapp('shop')).rejects.toThrow(/refused the login/);
    wrong.close();
  });

  it('puts the metadata and quotas of the VDC and the metadata of the org back through the admin views, and reports the allocation model it cannot change', async () => {
    const record = await client.record(await client.findVapp('shop'));
    expect(record.vdc?.adminHref).toBe('/api/admin/vdc/v1');
    expect(record.org?.adminHref).toBe('/api/admin/org/o1');
    const quotas = structuredClone({
      computeCapacity: fake.vdc.computeCapacity,
      vmQuota: fake.vdc.vmQuota,
      networkQuota: fake.vdc.networkQuota,
    });
    // What changed in vCD since the backup: metadata gone, quotas lowered, another model.
    fake.metadata.set('/api/vdc/v1', []);
    fake.metadata.set('/api/org/o1', []);
    fake.vdc.vmQuota = 2;
    fake.vdc.computeCapacity = {
      cpu: { units: 'MHz', limit: 500 },
      memory: { units: 'MB', limit: 1024 },
    };
    fake.vdc.allocationModel = 'AllocationPool';

    const outcome = await client.putBackSettings(record);
    expect(fake.metadata.get('/api/vdc/v1')!.map((m) => m.key)).toEqual(['cost-center']);
    expect(fake.metadata.get('/api/org/o1')!.map((m) => m.key)).toEqual(['tier']);
    expect({
      computeCapacity: fake.vdc.computeCapacity,
      vmQuota: fake.vdc.vmQuota,
      networkQuota: fake.vdc.networkQuota,
    }).toEqual(quotas);
    expect(fake.vdc.allocationModel).toBe('AllocationPool');
    expect(outcome.applied).toEqual([
      'metadata of VDC acme-vdc',
      'quotas of VDC acme-vdc',
      'metadata of organisation acme',
    ]);
    expect(outcome.notApplied).toEqual([
      expect.stringMatching(
        /allocation model of VDC acme-vdc: it is AllocationPool, was AllocationVApp; .* only when a VDC is created/,
      ),
    ]);
    // Nothing differs any more: the VDC is not written again.
    const puts = fake.calls.filter((c) => c === 'PUT /api/admin/vdc/v1').length;
    await client.putBackSettings(record);
    expect(fake.calls.filter((c) => c === 'PUT /api/admin/vdc/v1')).toHaveLength(puts);
  });

  it('reports, and does not fail on, the org and VDC settings a user who is no administrator may not change', async () => {
    const record = await client.record(await client.findVapp('shop'));
    fake.forbidAdmin = true;
    const outcome = await client.putBackSettings(record);
    expect(outcome.applied).toEqual([]);
    expect(outcome.notApplied).toEqual([
      expect.stringMatching(/^metadata of VDC acme-vdc: backup@acme may not change it/),
      expect.stringMatching(/^quotas of VDC acme-vdc: backup@acme may not change it/),
      expect.stringMatching(/^metadata of organisation acme: backup@acme may not change it/),
    ]);
  });

  it('imports vSphere VMs it does not manage as one new vApp in the recorded VDC, then puts the metadata back onto it', async () => {
    const record = await client.record(await client.findVapp('shop'));
    fake.vcenterUrl = 'https://vc.example.com/sdk';
    const href = await client.importVapp(
      'shop-restored',
      '/api/vdc/v1',
      ['vm-41', 'vm-42'],
      'https://vc.example.com/sdk',
    );
    expect(fake.imports).toEqual([
      {
        kind: 'importVmAsVApp',
        name: 'shop-restored',
        sourceMove: true,
        vmMoRef: 'vm-41',
        vdc: { href: '/api/vdc/v1' },
      },
      {
        kind: 'importVmIntoExistingVApp',
        sourceMove: true,
        vmMoRef: 'vm-42',
        vApp: { href },
      },
    ]);
    const imported = [...fake.vapps.values()].find((v) => v.name === 'shop-restored')!;
    expect(imported).toMatchObject({ vdc: '/api/vdc/v1', vms: ['vm-41', 'vm-42'] });
    await client.putBack(href, record);
    expect(imported.metadata.map((m) => m.key)).toEqual(['owner', 'replicas']);
    expect(imported.lease).toEqual(record.vapp.lease);
    // A vSphere vCD does not know is refused, naming what it has.
    await expect(
      client.importVapp('x', '/api/vdc/v1', ['vm-1'], 'https://other.example.com/sdk'),
    ).rejects.toThrow(
      /no vCenter registered at other\.example\.com \(it has https:\/\/vc\.example\.com\/sdk\)/,
    );
  });
});
