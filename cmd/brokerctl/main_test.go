package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/conformance"
)

// ctl runs brokerctl in process and returns its exit code and output.
func ctl(t *testing.T, url string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	code := run(ctx, append([]string{"--url", url}, args...), strings.NewReader(stdin), &out, &errOut)
	t.Logf("brokerctl %s: exit %d after %v", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return code, out.String(), errOut.String()
}

// testEndToEnd walks an operator's day on the broker behind url: publish,
// stats, tail, a poison message parked in the dead-letter topic, peek, redrive.
// idle is the dlq commands' --idle: how long they wait for a first message,
// which includes joining the group.
func testEndToEnd(t *testing.T, url, topic, idle string) {
	if code, out, errOut := ctl(t, url, "first\nsecond\nthird\n", "publish", "--key", "k", "--header", "source=cli", topic); code != 0 {
		t.Fatalf("publish: exit %d: %s %s", code, out, errOut)
	} else if ids := strings.Fields(out); len(ids) != 3 {
		t.Fatalf("publish printed %q, want 3 IDs", out)
	}
	waitFor(t, "stats to show depth 3", func() bool {
		code, out, _ := ctl(t, url, "", "stats", topic)
		return code == 0 && rowHas(out, topic, "3")
	})
	code, out, errOut := ctl(t, url, "", "tail", "--group", broker.DefaultGroup, "--count", "3", "--timeout", "30s", topic)
	if code != 0 || strings.Count(out, "source: cli") != 3 || !strings.Contains(out, "second") {
		t.Fatalf("tail: exit %d, output:\n%s\n%s", code, out, errOut)
	}

	if code, _, errOut := ctl(t, url, "", "publish", "--id", "poison-1", topic, "{not json"); code != 0 {
		t.Fatalf("publish poison: %s", errOut)
	}
	park(t, url, topic)
	if code, out, errOut := ctl(t, url, "", "stats", topic); code != 0 || column(out, topic, "dead-letters") != "1" {
		t.Fatalf("stats after dead-lettering: exit %d, want 1 dead letter:\n%s\n%s", code, out, errOut)
	}

	code, out, errOut = ctl(t, url, "", "dlq", "peek", "--idle", idle, topic)
	if code != 0 || !strings.Contains(out, "decode order: invalid character") || !strings.Contains(out, "{not json") {
		t.Fatalf("dlq peek: exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = ctl(t, url, "", "dlq", "redrive", "--dry-run", "--idle", idle, topic)
	if code != 0 || !strings.Contains(out, "1 would be sent back") {
		t.Fatalf("dlq redrive --dry-run: exit %d:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = ctl(t, url, "", "dlq", "redrive", "--idle", idle, topic)
	if code != 0 || !strings.Contains(out, "1 sent back") {
		t.Fatalf("dlq redrive: exit %d:\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := ctl(t, url, "", "stats", topic+".dlq"); code != 0 || !rowHas(out, topic+".dlq", "0") {
		t.Fatalf("stats after redrive: exit %d, want nothing left in the dead-letter topic:\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = ctl(t, url, "", "tail", "--group", broker.DefaultGroup, "--count", "1", "--timeout", "30s", "--json", topic)
	if code != 0 || !strings.Contains(out, `"id":"poison-1"`) || !strings.Contains(out, `"x-dlq-redrive-count":"1"`) {
		t.Fatalf("tail after redrive: exit %d:\n%s\n%s", code, out, errOut)
	}
}

// park runs a service that cannot handle the message waiting in topic, until
// it has parked it in the dead-letter topic.
func park(t *testing.T, url, topic string) {
	t.Helper()
	svc, err := broker.OpenConsumer(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = svc.Consume(ctx, topic, func(context.Context, *broker.Message) error {
			return broker.Permanent(errors.New("decode order: invalid character"))
		})
	}()
	waitFor(t, "the poison message in the dead-letter topic", func() bool {
		code, out, _ := ctl(t, url, "", "stats", topic+".dlq")
		return code == 0 && rowHas(out, topic+".dlq", "1")
	})
	cancel()
	_ = svc.Close()
	<-done
}

// The URL of a service's consumer, with its group and options, serves the
// commands that publish, and dlq reads the parked messages whatever group the
// URL names.
func TestConsumerURL(t *testing.T) {
	base, topic := "mem://consumer-url", conformance.RandomName("ctl")
	svcURL := base + "?group=billing&max_attempts=3&backoff_min=10ms"
	if code, _, errOut := ctl(t, svcURL, "", "publish", "--id", "poison-2", topic, "x"); code != 0 {
		t.Fatalf("publish with a consumer URL: exit %d: %s", code, errOut)
	}
	park(t, base, topic)
	code, out, errOut := ctl(t, svcURL, "", "dlq", "peek", "--idle", "1s", topic)
	if code != 0 || !strings.Contains(out, "poison-2") {
		t.Fatalf("dlq peek with a consumer URL: exit %d:\n%s\n%s", code, out, errOut)
	}
}

// rowHas reports whether the stats table shows depth for topic.
func rowHas(table, topic, depth string) bool {
	return column(table, topic, "depth") == depth
}

// column returns the named column of topic's row in a stats table, or "".
func column(table, topic, name string) string {
	lines := strings.Split(table, "\n")
	header := strings.Fields(lines[0])
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != len(header) || f[0] != topic {
			continue
		}
		for i, h := range header {
			if h == name {
				return f[i]
			}
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "usage: brokerctl"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"publish", "--help"}, exitOK, "usage: brokerctl publish"},
		{[]string{"tail"}, exitUsage, "usage: brokerctl tail"},
		{[]string{"dlq"}, exitUsage, "peek|redrive"},
		{[]string{"dlq", "redrive", "--help"}, exitOK, "-dry-run"},
		{[]string{"stats", "--watch", "soon", "t"}, exitUsage, "invalid value"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"--url", "mem://usage"}, tc.args...), strings.NewReader(""), &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String()+out.String(), tc.want) {
			t.Errorf("brokerctl %v: exit %d, output %q; want exit %d mentioning %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"--url", "nats://x", "stats", "t"}, nil, &bytes.Buffer{}, &errOut); code != exitUsage ||
		!strings.Contains(errOut.String(), "registered: ") {
		t.Errorf("unknown scheme: exit %d, %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"--url", "", "stats", "t"}, nil, &bytes.Buffer{}, &errOut); code != exitUsage {
		t.Errorf("no URL: exit %d", code)
	}
}

func TestTailTimesOut(t *testing.T) {
	code, _, errOut := ctl(t, "mem://tail-timeout", "", "tail", "--timeout", "100ms", "quiet")
	if code != exitTimeout || !strings.Contains(errOut, "nothing arrived") {
		t.Errorf("tail on a quiet topic: exit %d, %q; want %d", code, errOut, exitTimeout)
	}
}
