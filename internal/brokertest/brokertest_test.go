package brokertest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct {
		tg       Target
		endpoint string
		o        *Options
		want     string
	}{
		{Mem, "", nil, "mem://brokertest"},
		{Mem, "", &Options{Query: url.Values{"max_queued": {"10"}}}, "mem://brokertest?max_queued=10"},
		{RabbitMQ, "amqp://u:p@h:5672/", nil, "amqp://u:p@h:5672/"},
		{RabbitMQ, "amqp://u:p@h:5672/?heartbeat=5", &Options{Query: url.Values{"group": {"g"}}}, "amqp://u:p@h:5672/?heartbeat=5&group=g"},
		{Kafka, "h1:9092,h2:9092", nil, "kafka://h1:9092,h2:9092?create_topics=true&partitions=3"},
		{Kafka, "h1:9092", &Options{Query: url.Values{"partitions": {"1"}}}, "kafka://h1:9092?create_topics=true&partitions=1"},
		{SQS, "http://h:9324", &Options{Query: url.Values{"wait_time": {"1s"}}},
			"sqs://?create_queues=true&endpoint=http%3A%2F%2Fh%3A9324&region=us-east-1&wait_time=1s"},
	} {
		o := c.o
		if o == nil {
			o = &Options{}
		}
		if got := c.tg.url(t, c.endpoint, c.tg.query(o)); got != c.want {
			t.Errorf("%s URL with %+v = %q, want %q", c.tg.Name, c.o, got, c.want)
		}
	}
	if len(Kafka.defaults) != 2 {
		t.Errorf("building a URL changed Kafka's defaults: %v", Kafka.defaults)
	}
}

// Only tests may import this package: it deletes topics on shared brokers.
func TestImportedByTestsOnly(t *testing.T) {
	const self = "github.com/brokerkit/broker/internal/brokertest"
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == self {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s imports %s, which only tests may import", rel, self)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
