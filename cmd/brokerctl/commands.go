package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/brokerkit/broker"
	"github.com/brokerkit/broker/dlq"
)

// headerFlags collects repeated --header k=v flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	h[k] = v
	return nil
}

func cmdPublish(ctx context.Context, e *env, args []string) int {
	fs := e.flags("publish", "TOPIC [BODY...]",
		"Publishes each BODY argument as one message; with no BODY, each line of stdin.")
	key := fs.String("key", "", "ordering key for every message")
	id := fs.String("id", "", "message ID (only with a single message; default: generated)")
	headers := headerFlags{}
	fs.Var(headers, "header", "header key=value (repeatable)")
	if code, ok := parse(fs, args, 1, -1); !ok {
		return code
	}
	if !e.checkURL() {
		return exitUsage
	}
	topic := fs.Arg(0)
	var bodies [][]byte
	for _, b := range fs.Args()[1:] {
		bodies = append(bodies, []byte(b))
	}
	if len(bodies) == 0 {
		sc := bufio.NewScanner(e.stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			bodies = append(bodies, append([]byte(nil), sc.Bytes()...))
		}
		if err := sc.Err(); err != nil {
			return e.fail(fmt.Errorf("reading stdin: %w", err))
		}
	}
	if *id != "" && len(bodies) != 1 {
		return e.fail(fmt.Errorf("--id needs exactly one message, got %d: %w", len(bodies), broker.ErrInvalidArgument))
	}
	pub, err := broker.OpenPublisher(ctx, e.url)
	if err != nil {
		return e.fail(err)
	}
	defer pub.Close()
	msgs := make([]*broker.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = &broker.Message{ID: *id, Key: *key, Body: b, Headers: map[string]string(headers)}
	}
	for start := 0; start < len(msgs); start += 100 {
		batch := msgs[start:min(start+100, len(msgs))]
		if err := pub.Publish(ctx, topic, batch...); err != nil {
			return e.fail(err)
		}
	}
	for _, m := range msgs {
		fmt.Fprintln(e.stdout, m.ID)
	}
	fmt.Fprintf(e.stderr, "published %d message(s) to %s\n", len(msgs), topic)
	return exitOK
}

// printed is how tail and dlq peek show a message with --json.
type printed struct {
	ID          string            `json:"id"`
	Topic       string            `json:"topic,omitempty"`
	Key         string            `json:"key,omitempty"`
	Attempt     int               `json:"attempt,omitempty"`
	PublishedAt *time.Time        `json:"published_at,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        string            `json:"body"`
	BodyBase64  []byte            `json:"body_base64,omitempty"`
}

func show(e *env, m *broker.Message, asJSON bool) {
	if asJSON {
		p := printed{ID: m.ID, Topic: m.Topic, Key: m.Key, Attempt: m.Attempt, Headers: m.Headers}
		if !m.PublishedAt.IsZero() {
			t := m.PublishedAt
			p.PublishedAt = &t
		}
		if utf8.Valid(m.Body) {
			p.Body = string(m.Body)
		} else {
			p.BodyBase64 = m.Body
		}
		b, _ := json.Marshal(p)
		fmt.Fprintln(e.stdout, string(b))
		return
	}
	fmt.Fprintf(e.stdout, "--- %s  topic=%s key=%q attempt=%d", m.ID, m.Topic, m.Key, m.Attempt)
	if !m.PublishedAt.IsZero() {
		fmt.Fprintf(e.stdout, " published=%s", m.PublishedAt.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintln(e.stdout)
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(e.stdout, "    %s: %s\n", k, m.Headers[k])
	}
	if utf8.Valid(m.Body) {
		fmt.Fprintf(e.stdout, "%s\n", m.Body)
	} else {
		fmt.Fprintf(e.stdout, "(%d bytes, not UTF-8) %x\n", len(m.Body), m.Body)
	}
}

func cmdTail(ctx context.Context, e *env, args []string) int {
	fs := e.flags("tail", "TOPIC",
		"Prints messages of TOPIC as they arrive. By default it joins a group of its own, so it\n"+
			"takes nothing from the services' groups and sees messages published from now on; on\n"+
			"RabbitMQ it deletes that group's queue when it exits.\n"+
			"On brokers without fan-out (SQS) pass --group default: tail then CONSUMES messages.")
	group := fs.String("group", "", "consumer group (default: a new group of its own)")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "exit with code 3 if nothing arrives for this long (0: wait forever)")
	asJSON := fs.Bool("json", false, "print one JSON object per message")
	if code, ok := parse(fs, args, 1, 1); !ok {
		return code
	}
	if !e.checkURL() {
		return exitUsage
	}
	topic := fs.Arg(0)
	g, private := *group, *group == ""
	var u string
	var err error
	if private {
		g = "brokerctl-tail-" + strings.ToLower(broker.NewID()[16:])
		u, err = e.privateGroupURL(g)
		fmt.Fprintf(e.stderr, "brokerctl: tailing %s in group %s of its own\n", topic, g)
	} else {
		u, err = e.consumerURL(map[string]string{"group": g})
	}
	if err != nil {
		return e.fail(err)
	}
	c, err := broker.OpenConsumer(ctx, u)
	if err != nil {
		return e.fail(err)
	}
	defer func() {
		_ = c.Close()
		if private {
			e.dropPrivateGroup(ctx, topic, g)
		}
	}()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu       sync.Mutex
		n        int
		activity = make(chan struct{}, 1)
	)
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(runCtx, topic, func(_ context.Context, m *broker.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if *count > 0 && n >= *count {
				return nil
			}
			n++
			show(e, m, *asJSON)
			if *count > 0 && n >= *count {
				stop()
			}
			select {
			case activity <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	var idle <-chan time.Time
	var timer *time.Timer
	if *timeout > 0 {
		timer = time.NewTimer(*timeout)
		defer timer.Stop()
		idle = timer.C
	}
	timedOut := false
	for {
		select {
		case <-activity:
			if timer != nil {
				timer.Reset(*timeout)
			}
			continue
		case <-idle:
			timedOut = true
			stop()
			continue
		case err = <-done:
		}
		break
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return e.fail(err)
	}
	if timedOut {
		fmt.Fprintf(e.stderr, "brokerctl: nothing arrived for %v\n", *timeout)
		return exitTimeout
	}
	return exitOK
}

func cmdStats(ctx context.Context, e *env, args []string) int {
	fs := e.flags("stats", "TOPIC...", "Shows each topic's figures for a consumer group.")
	group := fs.String("group", "", "consumer group (default: the default group)")
	watch := fs.Duration("watch", 0, "refresh at this interval, showing the rate of change (0: once)")
	rounds := fs.Int("rounds", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	partitions := fs.Bool("partitions", false, "also show each partition's committed offset, end offset and lag (Kafka)")
	if code, ok := parse(fs, args, 1, -1); !ok {
		return code
	}
	if !e.checkURL() {
		return exitUsage
	}
	u, err := e.consumerURL(map[string]string{"group": *group})
	if err != nil {
		return e.fail(err)
	}
	c, err := broker.OpenConsumer(ctx, u)
	if err != nil {
		return e.fail(err)
	}
	defer c.Close()
	sr, ok := c.(broker.StatsReader)
	if !ok {
		return e.fail(fmt.Errorf("this adapter reports no stats: %w", broker.ErrUnsupported))
	}
	prev := map[string]broker.Stats{}
	var prevAt time.Time
	for round := 1; ; round++ {
		now := time.Now()
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "topic\tdepth\tin-flight\tlag\tconsumers\tdead-letters\tdepth/s\t")
		var parts []string // rows of the partition table
		for _, topic := range fs.Args() {
			s, err := sr.Stats(ctx, topic, *group)
			if err != nil {
				return e.fail(err)
			}
			for _, p := range s.Partitions {
				parts = append(parts, fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t", topic, p.Partition, p.Committed, p.End, p.Lag))
			}
			rate := "-"
			if p, ok := prev[topic]; ok && s.Depth >= 0 && p.Depth >= 0 {
				rate = fmt.Sprintf("%+.1f", float64(s.Depth-p.Depth)/now.Sub(prevAt).Seconds())
			}
			prev[topic] = s
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", topic, figure(s.Depth), figure(s.InFlight),
				figure(s.Lag), figure(s.Consumers), figure(s.DeadLetters), rate)
		}
		tw.Flush()
		if *partitions && len(parts) > 0 {
			fmt.Fprintln(e.stdout)
			tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "topic\tpartition\tcommitted\tend\tlag\t")
			for _, row := range parts {
				fmt.Fprintln(tw, row)
			}
			tw.Flush()
		}
		prevAt = now
		if *watch <= 0 || *rounds > 0 && round >= *rounds {
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(*watch):
		}
		fmt.Fprintln(e.stdout)
	}
}

func figure(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func cmdDLQ(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || (args[0] != "peek" && args[0] != "redrive") {
		fmt.Fprintln(e.stderr, "usage: brokerctl dlq peek|redrive [flags] TOPIC\n\n"+
			"TOPIC is the original topic or its dead-letter topic (<topic>.dlq).\n"+
			"Run 'brokerctl dlq peek --help' or 'brokerctl dlq redrive --help' for flags.")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return exitOK
		}
		return exitUsage
	}
	sub := args[0]
	fs := e.flags("dlq "+sub, "TOPIC", map[string]string{
		"peek":    "Prints parked messages with their dead-letter headers, leaving them parked.",
		"redrive": "Sends parked messages back to their original topic (or --to).",
	}[sub])
	limit := fs.Int("limit", 0, "at most this many messages (0: all)")
	idle := fs.Duration("idle", 2*time.Second, "stop when no message arrived for this long")
	reason := fs.String("reason", "", "only messages whose dead-letter reason contains this text")
	var to *string
	var dryRun, asJSON *bool
	if sub == "redrive" {
		to = fs.String("to", "", "send to this topic instead of each message's original topic")
		dryRun = fs.Bool("dry-run", false, "report what would be sent back, move nothing")
	} else {
		asJSON = fs.Bool("json", false, "print one JSON object per message")
	}
	if code, ok := parse(fs, args[1:], 1, 1); !ok {
		return code
	}
	if !e.checkURL() {
		return exitUsage
	}
	topic := fs.Arg(0)
	if !strings.HasSuffix(topic, ".dlq") {
		topic += ".dlq"
	}
	opts := dlq.Options{Limit: *limit, Idle: *idle}
	if *reason != "" {
		opts.Filter = func(m *broker.Message) bool { return strings.Contains(m.Headers[dlq.HeaderReason], *reason) }
	}
	// Parked messages are kept for the dead-letter topic's default group,
	// whatever group the URL names.
	u, err := e.consumerURL(map[string]string{"group": broker.DefaultGroup, "concurrency": "1"})
	if err != nil {
		return e.fail(err)
	}
	c, err := broker.OpenConsumer(ctx, u)
	if err != nil {
		return e.fail(err)
	}
	defer c.Close()
	p, err := broker.OpenPublisher(ctx, e.url)
	if err != nil {
		return e.fail(err)
	}
	defer p.Close()
	if sub == "peek" {
		msgs, rep, err := dlq.Peek(ctx, c, p, topic, opts)
		for _, m := range msgs {
			show(e, m, *asJSON)
		}
		if err != nil {
			return e.fail(err)
		}
		fmt.Fprintf(e.stderr, "%d message(s) in %s shown, %d read\n", len(msgs), topic, rep.Seen)
		return exitOK
	}
	opts.To, opts.DryRun = *to, *dryRun
	var last atomic.Int64
	opts.Progress = func(r dlq.Report) {
		last.Store(int64(r.Seen))
		fmt.Fprintf(e.stderr, "\rredrive %s: %d read, %d sent back, %d kept", topic, r.Seen, r.Moved, r.Kept)
	}
	rep, err := dlq.Redrive(ctx, c, p, topic, opts)
	if last.Load() > 0 {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return e.fail(err)
	}
	if *dryRun {
		fmt.Fprintf(e.stdout, "%s: %d read, %d would be sent back (dry run), nothing moved\n", topic, rep.Seen, rep.Selected)
	} else {
		fmt.Fprintf(e.stdout, "%s: %d read, %d sent back, %d kept\n", topic, rep.Seen, rep.Moved, rep.Kept)
	}
	return exitOK
}
