/** The Workflows port on Step Functions: one execution per job, named after the job id. */
import { ExecutionAlreadyExists, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { Workflows } from '../core/requests/launch';
import { ConflictError, TransientError } from '../../kernel/errors';

export class SfnWorkflows implements Workflows {
  constructor(
    private readonly arns: {
      backup: string;
      restore: string;
      verify: string;
      snapshot: string;
      prune: string;
    },
    private readonly client: SFNClient = new SFNClient({}),
  ) {}

  startBackup(input: { jobId: string }): Promise<string> {
    return this.start(this.arns.backup, input.jobId, input);
  }

  startRestore(input: { jobId: string }): Promise<string> {
    return this.start(this.arns.restore, input.jobId, input);
  }

  startVerify(input: { jobId: string }): Promise<string> {
    return this.start(this.arns.verify, input.jobId, input);
  }

  startSnapshot(input: { jobId: string }): Promise<string> {
    return this.start(this.arns.snapshot, input.jobId, input);
  }

  startPrune(input: { jobId: string }): Promise<string> {
    return this.start(this.arns.prune, input.jobId, input);
  }

  private async start(stateMachineArn: string, name: string, input: unknown): Promise<string> {
    try {
      const out = await this.client.send(
        new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }),
      );
      return out.executionArn!;
    } catch (err) {
      if (err instanceof ExecutionAlreadyExists) {
        throw new ConflictError(`an execution named ${name} exists already`, { cause: err });
      }
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === undefined || status >= 500 || (err as Error).name === 'ThrottlingException') {
        throw new TransientError(
          `Step Functions did not start the job: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
  }
}
