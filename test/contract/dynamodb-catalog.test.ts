/**
 * The DynamoDB catalog adapter passes the Catalog contract against dynalite (the local mode
 * DynamoDB), each case on a fresh table created from the shared definition.
 */
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import dynalite from 'dynalite';
import { catalogTableInput, DynamoDbCatalog } from '../../kernel/adapters/dynamodb-catalog';
import { LOCAL_AWS } from '../../local/emulators';
import { describeCatalogContract } from '../fixtures/catalog-conformance';

const server = dynalite({ createTableMs: 0 });
let client: DynamoDBClient;
let tables = 0;

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  client = new DynamoDBClient({
    ...LOCAL_AWS,
    // A dynalite of its own, which checks no credentials.
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    endpoint: `http://127.0.0.1:${port}`,
  });
});

afterAll(async () => {
  client?.destroy();
  await new Promise((resolve) => server.close(resolve));
});

describeCatalogContract('DynamoDB on dynalite', async () => {
  const name = `catalog-${++tables}`;
  await client.send(new CreateTableCommand(catalogTableInput(name)));
  return new DynamoDbCatalog(name, client);
});

describe("an agent's task log writes", () => {
  it("are UpdateItems in the claim's site partition of the job, what a site role may already do (no PutItem)", async () => {
    const name = `catalog-${++tables}`;
    await client.send(new CreateTableCommand(catalogTableInput(name)));
    const sent: Array<{ command: string; pk: unknown }> = [];
    const watched = new DynamoDBClient({
      ...LOCAL_AWS,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      endpoint: await client.config.endpoint!().then((e) => `http://${e.hostname}:${e.port}`),
    });
    watched.middlewareStack.add(
      (next, context) => async (args) => {
        // The document client's marshalling may not have run yet at this step: either form.
        const pk = (args.input as { Key?: { pk?: string | { S?: string } } }).Key?.pk;
        sent.push({ command: context.commandName ?? '', pk: typeof pk === 'object' ? pk.S : pk });
        return next(args);
      },
      { step: 'initialize' },
    );
    const catalog = new DynamoDbCatalog(name, watched);
    const batch = {
      claimId: 'claim-1',
      seq: 0,
      agent: 'site-1',
      target: 'docker:web',
      lines: [{ at: new Date().toISOString(), level: 'info' as const, event: 'e', text: 't' }],
    };

    const claim = { site: 'site-1', jobId: 'job-1', claimId: 'claim-1' };

    await catalog.appendTaskLog(claim, batch);
    await catalog.appendTaskLog(claim, batch);

    expect(sent).toEqual([
      { command: 'UpdateItemCommand', pk: 'SITE#site-1#JOB#job-1' },
      { command: 'UpdateItemCommand', pk: 'SITE#site-1#JOB#job-1' },
    ]);
    watched.destroy();
  });
});
