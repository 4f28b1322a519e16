"""The iris classifier as an AWS Lambda handler, in the shape of the seed
tutorials (model loaded at import, json.loads(event['body']), an API Gateway
answer), with today's `import joblib` instead of sklearn.externals.joblib.

tandem runs it with runtime.lambda.handler: app.lambda_handler (see
lambda.yaml); the model is examples/iris-flask/model.pkl, which
examples/iris-flask/train.py writes.
"""
import json
import os

import joblib

LABELS = ["setosa", "versicolor", "virginica"]

model = joblib.load(os.environ.get("MODEL_PATH", "model.pkl"))


def lambda_handler(event, context):
    body = json.loads(event['body'])
    rows = body['instances'] if 'instances' in body else [body['features']]
    predictions = [int(p) for p in model.predict(rows)]
    return {
        'statusCode': 200,
        'headers': {'Content-Type': 'application/json'},
        'body': json.dumps({
            'predictions': predictions,
            'labels': [LABELS[p] for p in predictions],
            'request_id': context.aws_request_id,
        }),
    }
