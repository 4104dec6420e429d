package smoke

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/brokerkit/broker/internal/testenv"
)

// TestSQSQueues creates a standard and a FIFO queue and sends, receives and deletes
// one message on each, through aws-sdk-go-v2 with a custom endpoint and static
// credentials.
func TestSQSQueues(t *testing.T) {
	endpoint := testenv.SQSEndpoint(t)
	ctx := deadline(t, 60*time.Second)

	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("brokerkit", "brokerkit", "")))
	if err != nil {
		t.Fatalf("aws config: %v", err)
	}
	client := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })

	tests := []struct {
		name  string
		fifo  bool
		queue string
	}{
		{name: "standard", queue: uniqueName(t)},
		{name: "fifo", fifo: true, queue: uniqueName(t) + ".fifo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &sqs.CreateQueueInput{QueueName: aws.String(tt.queue)}
			if tt.fifo {
				in.Attributes = map[string]string{
					string(types.QueueAttributeNameFifoQueue):                 "true",
					string(types.QueueAttributeNameContentBasedDeduplication): "false",
				}
			}
			created, err := client.CreateQueue(ctx, in)
			if err != nil {
				t.Fatalf("create queue %s: %v", tt.queue, err)
			}
			queueURL := created.QueueUrl
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: queueURL}); err != nil {
					t.Errorf("delete queue: %v", err)
				}
			})

			body := "hello " + tt.queue
			send := &sqs.SendMessageInput{
				QueueUrl:    queueURL,
				MessageBody: aws.String(body),
				MessageAttributes: map[string]types.MessageAttributeValue{
					"smoke": {DataType: aws.String("String"), StringValue: aws.String("1")},
				},
			}
			if tt.fifo {
				send.MessageGroupId = aws.String("group-1")
				send.MessageDeduplicationId = aws.String(tt.queue)
			}
			sent, err := client.SendMessage(ctx, send)
			if err != nil {
				t.Fatalf("send: %v", err)
			}

			// Long polling waits on the server; loop only until the context ends.
			var got types.Message
			for got.MessageId == nil {
				out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
					QueueUrl:                    queueURL,
					MaxNumberOfMessages:         1,
					WaitTimeSeconds:             5,
					MessageAttributeNames:       []string{"All"},
					MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
				})
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				if len(out.Messages) > 0 {
					got = out.Messages[0]
				}
			}
			if aws.ToString(got.MessageId) != aws.ToString(sent.MessageId) || aws.ToString(got.Body) != body {
				t.Errorf("got id %q body %q, want id %q body %q",
					aws.ToString(got.MessageId), aws.ToString(got.Body), aws.ToString(sent.MessageId), body)
			}
			if v := got.MessageAttributes["smoke"].StringValue; aws.ToString(v) != "1" {
				t.Errorf("message attribute smoke = %q, want 1", aws.ToString(v))
			}
			if tt.fifo {
				if g := got.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]; g != "group-1" {
					t.Errorf("MessageGroupId = %q, want group-1", g)
				}
			}
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
				QueueUrl: queueURL, ReceiptHandle: got.ReceiptHandle,
			}); err != nil {
				t.Fatalf("delete message: %v", err)
			}
		})
	}
}
