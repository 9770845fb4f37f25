/**
 * The DynamoDB catalog adapter passes the Catalog contract against dynalite (the local mode
 * DynamoDB), each case on a fresh table created from the shared definition.
 */
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll } from 'vitest';
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
