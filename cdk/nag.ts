/**
 * cdk-nag acknowledgements, written next to the resources they concern. Every synth runs the AWS
 * Solutions checks (cdk/app.ts); a finding that stands must be acknowledged here with the reason
 * it stands. Findings about one wildcard resource are acknowledged one by one, naming the
 * resource the way cdk-nag prints it (`<LogicalId.Attr>`), so a new wildcard still fails synth.
 */
import { CfnElement, Stack, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

const NAMESPACE = 'AwsSolutions';

/** Acknowledges `rule` (e.g. `AwsSolutions-L1`), or one finding of it, on `scope` and below. */
export function acknowledge(
  scope: IConstruct,
  rule: string,
  reason: string,
  finding?: string,
): void {
  const id = `${NAMESPACE}::${rule}${finding === undefined ? '' : `[${finding}]`}`;
  Validations.of(scope).acknowledge({ id, reason });
}

/** How cdk-nag prints `Fn::GetAtt` of `resource`: `<LogicalId.Attr>`. */
export function nagAttr(resource: IConstruct, attribute: string): string {
  const element = resource instanceof CfnElement ? resource : resource.node.defaultChild;
  if (!(element instanceof CfnElement)) {
    throw new Error(`${resource.node.path} has no CloudFormation resource to name`);
  }
  const logicalId = Stack.of(element).resolve(element.logicalId) as string;
  return `<${logicalId}.${attribute}>`;
}

/** How cdk-nag prints a `Ref` of `resource`: `<LogicalId>`. */
export function nagRef(resource: IConstruct): string {
  const element = resource instanceof CfnElement ? resource : resource.node.defaultChild;
  if (!(element instanceof CfnElement)) {
    throw new Error(`${resource.node.path} has no CloudFormation resource to name`);
  }
  return `<${Stack.of(element).resolve(element.logicalId) as string}>`;
}
