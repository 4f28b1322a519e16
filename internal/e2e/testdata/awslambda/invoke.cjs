// invoke.cjs calls tandem's Lambda Invoke API with the AWS SDK's Lambda
// client (@aws-sdk/client-lambda, its endpoint set to tandem's gateway), for
// internal/e2e/lambda_test.go, and prints what it saw as one JSON object.
// Environment:
//
//   LAMBDA_MODULE  the package folder (.cache/npm/awslambda/node_modules/@aws-sdk/client-lambda)
//   ENDPOINT       tandem's gateway, http://HOST:PORT
//   FUNCTION       the function deployment's name
'use strict';
const { LambdaClient, InvokeCommand } = require(process.env.LAMBDA_MODULE);

const client = new LambdaClient({
  endpoint: process.env.ENDPOINT,
  region: 'us-east-1',
  credentials: { accessKeyId: 'unused', secretAccessKey: 'unused' },
  maxAttempts: 1,
});
const fn = process.env.FUNCTION;
const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const dec = (b) => (b && b.length ? JSON.parse(new TextDecoder().decode(b)) : null);

async function call(input) {
  try {
    const r = await client.send(new InvokeCommand(input));
    return { status: r.StatusCode, functionError: r.FunctionError || null, version: r.ExecutedVersion || null, payload: dec(r.Payload) };
  } catch (e) {
    return { error: { name: e.name, status: e.$metadata && e.$metadata.httpStatusCode, message: e.message } };
  }
}

async function main() {
  const out = {};
  const ctx = Buffer.from(JSON.stringify({ custom: { from: 'sdk' } })).toString('base64');
  out.sum = await call({ FunctionName: fn, Payload: enc({ op: 'sum', numbers: [1, 2, 3.5] }), ClientContext: ctx });
  out.byArn = await call({ FunctionName: `arn:aws:lambda:us-east-1:000000000000:function:${fn}:$LATEST`, Payload: enc({ op: 'sum', numbers: [40, 2] }) });
  out.fail = await call({ FunctionName: fn, Payload: enc({ op: 'fail' }) });
  out.dryRun = await call({ FunctionName: fn, InvocationType: 'DryRun' });
  out.event = await call({ FunctionName: fn, InvocationType: 'Event', Payload: enc({ op: 'sum' }) });
  out.unknown = await call({ FunctionName: 'no-such-function', Payload: enc({}) });
  out.badVersion = await call({ FunctionName: fn, Qualifier: '7', Payload: enc({}) });
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
