package driver

import (
	"context"
	"testing"
	"time"
)

func TestSettleContextsShareADeadlineAndRenew(t *testing.T) {
	const d = 80 * time.Millisecond
	s := newSettleContexts(context.Background(), d)
	first := s.get()
	if dl, ok := first.Deadline(); !ok || time.Until(dl) > d || time.Until(dl) < d-d/8 {
		t.Fatalf("deadline %v from now, want within (%v, %v]", time.Until(dl), d-d/8, d)
	}
	if again := s.get(); again != first {
		t.Fatal("a call right after the first got a new context; want the shared one")
	}
	time.Sleep(d/8 + 5*time.Millisecond)
	next := s.get()
	if next == first {
		t.Fatal("after d/8 the same context was handed out; its deadline would be too close")
	}
	if dl, _ := next.Deadline(); time.Until(dl) < d-d/8 {
		t.Fatalf("renewed context ends in %v, want at least %v", time.Until(dl), d-d/8)
	}
	if first.Err() != nil {
		t.Fatal("the older context ended before its deadline; a call may still use it")
	}
	<-first.Done() // it ends at its own deadline
	s.stop()
	if next.Err() == nil {
		t.Fatal("stop left the newest context running")
	}
}
