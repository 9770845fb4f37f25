/**
 * CDK entry point (`cdk.json`: `npx tsx cdk/app.ts`). Environment-agnostic: synthesizes offline,
 * deploys to whatever account and region the CLI's credentials name. Every synth runs the cdk-nag
 * AWS Solutions checks; the findings that stand are acknowledged, with reasons, next to the
 * resources they concern.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { StowageStack } from './stack';

const app = new App();
new StowageStack(app, 'Stowage');
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
