import { describeCatalogContract } from '../../../fixtures/catalog-conformance';
import { MemoryCatalog } from '../../../fixtures/memory-catalog';

// The in-memory catalog the domain tests use passes the same contract as the DynamoDB adapter.
describeCatalogContract('in memory', () => new MemoryCatalog());
