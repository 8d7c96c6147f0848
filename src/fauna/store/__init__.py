"""Where things are kept: S3/MinIO (boto3), the champion pointer, the Model Registry."""
