/** The Workflows port on Step Functions: one execution per job, named after the job id. */
import {
  ExecutionAlreadyExists,
  SFNClient,
  StartExecutionCommand,
  StopExecutionCommand,
} from '@aws-sdk/client-sfn';
import type { Job } from '../../kernel/model';
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

  async stop(
    job: { kind: Job['kind']; jobId: string; executionArn?: string },
    cause: string,
  ): Promise<boolean> {
    // An execution is named after its job: its ARN is known before the job records it.
    const machine = this.arns[job.kind.toLowerCase() as keyof typeof this.arns];
    const executionArn =
      job.executionArn ?? `${machine.replace(':stateMachine:', ':execution:')}:${job.jobId}`;
    try {
      await this.client.send(
        new StopExecutionCommand({
          executionArn,
          error: 'Cancelled',
          cause: cause.slice(0, 32_000),
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === 'ExecutionDoesNotExist') return false;
      throw new TransientError(
        `Step Functions did not stop ${executionArn}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
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
