/**
 * One SQS queue per site, each with its dead-letter queue. A site is a place with its own agents
 * (a data centre, a lab, a laptop); the state machines put one task per target on the queue of
 * the site that sees the target, and only that site's agents poll it. Queue names are fixed
 * (`siteQueueName(site)`) because agents and the API find a queue by its name.
 */
import { Duration } from 'aws-cdk-lib';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { SITE_QUEUE, siteQueueName } from '../../kernel/resources';

/** SQS queue names: at most 80 characters of [A-Za-z0-9_-]; the DLQ name is the longest. */
const MAX_SITE_LENGTH = 80 - SITE_QUEUE.namePrefix.length - SITE_QUEUE.dlqSuffix.length;
/** No `#` or `/`: the catalog keys a site role may write are `SITE#<site>#*` (agent-access.ts). */
const SITE_PATTERN = /^[A-Za-z0-9_-]+$/;

/**
 * The DLQ keeps what it gets for the SQS maximum, so that a poisoned task can still be read
 * long after the source queue would have dropped it.
 */
const DLQ_RETENTION = Duration.days(14);

export interface SiteQueue {
  readonly site: string;
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
}

export interface SiteQueuesProps {
  /** Site names; each must be a valid part of an SQS queue name. At least one. */
  readonly sites: readonly string[];
}

export class SiteQueues extends Construct {
  readonly sites: readonly SiteQueue[];

  constructor(scope: Construct, id: string, props: SiteQueuesProps) {
    super(scope, id);
    validateSites(props.sites);

    this.sites = props.sites.map((site) => {
      const name = siteQueueName(site);
      const deadLetterQueue = new Queue(this, `${site}-dlq`, {
        queueName: `${name}${SITE_QUEUE.dlqSuffix}`,
        retentionPeriod: DLQ_RETENTION,
        encryption: QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
      const queue = new Queue(this, site, {
        queueName: name,
        visibilityTimeout: Duration.seconds(SITE_QUEUE.visibilityTimeoutSeconds),
        receiveMessageWaitTime: Duration.seconds(SITE_QUEUE.receiveWaitTimeSeconds),
        retentionPeriod: Duration.seconds(SITE_QUEUE.retentionSeconds),
        deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: SITE_QUEUE.maxReceiveCount },
        encryption: QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
      });
      return { site, queue, deadLetterQueue };
    });
  }

  get queues(): Queue[] {
    return this.sites.map((s) => s.queue);
  }
}

function validateSites(sites: readonly string[]): void {
  if (sites.length === 0) throw new Error('stowage:sites must name at least one site');
  const seen = new Set<string>();
  for (const site of sites) {
    if (!SITE_PATTERN.test(site) || site.length > MAX_SITE_LENGTH) {
      throw new Error(
        `invalid site name ${JSON.stringify(site)}: use 1-${MAX_SITE_LENGTH} characters of A-Z a-z 0-9 _ -`,
      );
    }
    // CloudFormation logical ids keep only letters and digits, so `a-b` and `ab` would collide.
    const key = site.replace(/[^A-Za-z0-9]/g, '').toLowerCase();
    if (seen.has(key)) throw new Error(`site ${JSON.stringify(site)} is listed twice (or nearly)`);
    seen.add(key);
  }
}
