/**
 * The state machines of WORKFLOWS (backup, restore, verify, snapshot, prune), built from the ASL files under
 * statemachines/ (the same files local mode executes) with `${Placeholder}` substitutions for the function ARNs. The ASL
 * files are the single source of truth: nothing here adds states.
 *
 * Each machine's role may invoke only the functions its file references and send messages only
 * to the site queues; the task token in each message is what lets an agent answer.
 */
import { readFileSync } from 'node:fs';
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import {
  DefinitionBody,
  LogLevel,
  StateMachine,
  StateMachineType,
} from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ASL_SUBSTITUTIONS, WORKFLOWS } from '../../kernel/resources';
import { acknowledge } from '../nag';
import { LOG_RETENTION, aslFile } from '../project';

export type WorkflowName = keyof typeof WORKFLOWS;

export interface WorkflowsProps {
  readonly recordJob: IFunction;
  readonly commitPoint: IFunction;
  readonly prunePlan: IFunction;
  /**
   * Makes the start-checks function the backup machine invokes (a policy's every Nth run
   * verifies and restore-tests its points), given the machines it starts: built after them and
   * before the backup machine, so no machine and function depend on each other in a cycle.
   */
  readonly startChecks: (machines: { verify: StateMachine; restore: StateMachine }) => IFunction;
  /** The site queues the machines dispatch tasks to (never the DLQs). */
  readonly siteQueues: readonly IQueue[];
}

const PLACEHOLDER = /\$\{([^}]*)\}/g;

/** The `${...}` placeholders an ASL file uses, in order of first appearance. */
export function placeholdersIn(asl: string): string[] {
  return [...new Set([...asl.matchAll(PLACEHOLDER)].map((m) => m[1] ?? ''))];
}

export class Workflows extends Construct {
  readonly machines: Readonly<Record<WorkflowName, StateMachine>>;
  readonly startChecks: IFunction;

  constructor(scope: Construct, id: string, props: WorkflowsProps) {
    super(scope, id);

    const functionsByPlaceholder: Record<string, IFunction> = {
      [ASL_SUBSTITUTIONS.recordJobFunction]: props.recordJob,
      [ASL_SUBSTITUTIONS.commitPointFunction]: props.commitPoint,
      [ASL_SUBSTITUTIONS.prunePlanFunction]: props.prunePlan,
    };

    const build = (name: WorkflowName): StateMachine => {
      const file = aslFile(WORKFLOWS[name].file);
      // Read at synth time only to learn which functions the file references: an unknown
      // placeholder fails here rather than as an invalid FunctionName at deploy time.
      const used = placeholdersIn(readFileSync(file, 'utf8'));
      const definitionSubstitutions: Record<string, string> = {};
      const invoked: IFunction[] = [];
      for (const placeholder of used) {
        const fn = functionsByPlaceholder[placeholder];
        if (!fn) {
          throw new Error(
            `${WORKFLOWS[name].file} uses \${${placeholder}}, which is not in ASL_SUBSTITUTIONS`,
          );
        }
        definitionSubstitutions[placeholder] = fn.functionArn;
        invoked.push(fn);
      }

      const logGroup = new LogGroup(this, `${name}-logs`, {
        // The /aws/vendedlogs/ prefix keeps the logs resource policy Step Functions writes small.
        logGroupName: `/aws/vendedlogs/states/${Stack.of(this).stackName}-${name}`,
        retention: LOG_RETENTION,
        removalPolicy: RemovalPolicy.DESTROY,
      });

      const machine = new StateMachine(this, name, {
        definitionBody: DefinitionBody.fromFile(file),
        definitionSubstitutions,
        stateMachineType: StateMachineType.STANDARD,
        tracingEnabled: true,
        logs: {
          destination: logGroup,
          level: LogLevel.ALL,
          // Execution data would copy every task token (a bearer credential for
          // SendTaskSuccess) into the logs; the execution history keeps inputs anyway.
          includeExecutionData: false,
        },
      });

      if (invoked.length > 0) {
        // The ASL invokes the unqualified ARNs, so no `:*` for versions and aliases.
        machine.addToRolePolicy(
          new PolicyStatement({
            actions: ['lambda:InvokeFunction'],
            resources: invoked.map((fn) => fn.functionArn),
          }),
        );
      }
      machine.addToRolePolicy(
        new PolicyStatement({
          actions: ['sqs:SendMessage'],
          resources: props.siteQueues.map((q) => q.queueArn),
        }),
      );
      acknowledge(
        machine,
        'AwsSolutions-IAM5',
        'Step Functions log delivery (logs:*LogDelivery, PutResourcePolicy, Describe*) and X-Ray ' +
          'tracing support no resource-level permissions.',
        'Resource::*',
      );
      return machine;
    };

    const names = (Object.keys(WORKFLOWS) as WorkflowName[]).filter((n) => n !== 'backup');
    const machines = Object.fromEntries(names.map((name) => [name, build(name)])) as Record<
      WorkflowName,
      StateMachine
    >;
    this.startChecks = props.startChecks({ verify: machines.verify, restore: machines.restore });
    functionsByPlaceholder[ASL_SUBSTITUTIONS.startChecksFunction] = this.startChecks;
    machines.backup = build('backup');
    this.machines = machines;
  }
}
