package compare

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The settings every benchmark shares, on both sides.
const (
	bodySize = 256
	// publishers goroutines publish at once, each sending batches of batch
	// messages per Publish call (both APIs take variadic messages).
	publishers = 8
	batch      = 64
	// concurrency is how many handlers run at once on each side, unless a
	// benchmark says otherwise.
	concurrency = 16
	// rounds is how many times each benchmark alternates its sides. The
	// machine is shared and the brokers' speed drifts, so each brokerkit run is
	// compared with the Watermill run beside it, and medians are reported.
	rounds = 5
	// waitLimit bounds how long a run waits for its last message.
	waitLimit = 5 * time.Minute
)

var body = make([]byte, bodySize)

// side is one library's run of a benchmark.
type side struct {
	name string
	run  func(b *testing.B)
}

// sideBySide runs the sides one after the other, rounds times. The first side
// is brokerkit; the summary divides its median by each other side's.
// Repeated names get the suffixes #01, #02, ...
func sideBySide(b *testing.B, sides ...side) {
	for range rounds {
		for _, s := range sides {
			b.Run(s.name, s.run)
		}
	}
}

// publishN publishes n messages with publishers goroutines, each calling send
// with batches of up to batch messages. send gets the size of its batch.
func publishN(b *testing.B, n int, send func(ctx context.Context, k int) error) {
	publishGated(b, n, nil, send)
}

// publishGated is publishN that takes a token from gate (when not nil) before
// each batch; the consumer's counter puts one back per batch handled.
func publishGated(b *testing.B, n int, gate chan struct{}, send func(ctx context.Context, k int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for {
				start := int(next.Add(batch)) - batch
				if start >= n {
					return
				}
				if gate != nil {
					<-gate
				}
				if err := send(context.Background(), min(batch, n-start)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow() // rather than wait for messages that were never sent
	}
}

// publishOne sends one message after the other, b.N times, after one
// untimed to set up the topology.
func publishOne(b *testing.B, send func(ctx context.Context, k int) error) {
	ctx := context.Background()
	if err := send(ctx, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := send(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
	report(b)
}

// counter counts handled messages: the first is a warm-up that shows the
// consumer is running; done closes when n more were handled.
type counter struct {
	n          int64
	seen       atomic.Int64
	warm, done chan struct{}
	gate       chan struct{} // nil, or see newGatedCounter
}

func newCounter(n int) *counter {
	return &counter{n: int64(n), warm: make(chan struct{}), done: make(chan struct{})}
}

// newGatedCounter is a counter with a gate for publishGated that lets at most
// batches batches be published and not yet handled.
func newGatedCounter(n, batches int) *counter {
	c := newCounter(n)
	c.gate = make(chan struct{}, batches)
	for range batches {
		c.gate <- struct{}{}
	}
	return c
}

// add is the no-op handler's only work.
func (c *counter) add() {
	k := c.seen.Add(1)
	switch k {
	case 1:
		close(c.warm)
	case c.n + 1:
		close(c.done)
	}
	if c.gate != nil && k > 1 && (k-1)%batch == 0 {
		select {
		case c.gate <- struct{}{}:
		default: // the last batches: no publisher waits any more
		}
	}
}

func (c *counter) waitWarm(b *testing.B) { c.wait(b, c.warm, "the warm-up message") }
func (c *counter) waitDone(b *testing.B) { c.wait(b, c.done, "the last message") }

func (c *counter) wait(b *testing.B, ch chan struct{}, what string) {
	b.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		b.Fatalf("no %s after %v: handled %d of %d", what, waitLimit, c.seen.Load(), c.n+1)
	}
}

// report stops the timer, so that closing clients after it does not count,
// and records msgs/s for b, as a metric and for the summary.
func report(b *testing.B) {
	b.StopTimer()
	v := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(v, "msgs/s")
	results.add(b.Name(), b.N, v)
}

// results keeps every run's msgs/s for the summary TestMain prints.
var results = &store{}

type store struct {
	mu    sync.Mutex
	order []string // benchmark/side names, first seen first
	runs  map[string][]run
}

type run struct {
	n    int
	rate float64
}

func (s *store) add(name string, n int, rate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		s.runs = map[string][]run{}
	}
	if _, ok := s.runs[name]; !ok {
		s.order = append(s.order, name)
	}
	s.runs[name] = append(s.runs[name], run{n, rate})
}

// summary is a Markdown table of the medians and ratios. Of each name's runs
// it keeps those with the largest b.N: the testing package calls a benchmark
// with b.N = 1 first, then with growing b.N until -benchtime is reached, and
// only the last counts (with -count, each repetition's last).
func (s *store) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	type key struct{ bench, side string }
	rates := map[key][]float64{}
	var benches []string
	sides := map[string][]string{}
	for _, name := range s.order {
		bench, sideName, ok := strings.Cut(strings.TrimPrefix(name, "Benchmark"), "/")
		if !ok {
			continue
		}
		sideName, _, _ = strings.Cut(sideName, "#")
		if !slices.Contains(benches, bench) {
			benches = append(benches, bench)
		}
		if !slices.Contains(sides[bench], sideName) {
			sides[bench] = append(sides[bench], sideName)
		}
		runs := s.runs[name]
		maxN := 0
		for _, r := range runs {
			maxN = max(maxN, r.n)
		}
		for _, r := range runs {
			if r.n == maxN {
				rates[key{bench, sideName}] = append(rates[key{bench, sideName}], r.rate)
			}
		}
	}
	if len(benches) == 0 {
		return ""
	}
	var out strings.Builder
	out.WriteString("\n| benchmark | side | runs (msgs/s) | median msgs/s | brokerkit / side |\n|---|---|---|---|---|\n")
	for _, bench := range benches {
		base := median(rates[key{bench, sides[bench][0]}])
		for _, sd := range sides[bench] {
			rs := rates[key{bench, sd}]
			m := median(rs)
			ratio := ""
			if sd != sides[bench][0] && m > 0 {
				ratio = fmt.Sprintf("**%.2f**", base/m)
			}
			fmt.Fprintf(&out, "| %s | %s | %s | %.0f | %s |\n", bench, sd, joinRates(rs), m, ratio)
		}
	}
	return out.String()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func joinRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " ")
}

func TestMain(m *testing.M) {
	code := m.Run()
	fmt.Print(results.summary())
	os.Exit(code)
}
