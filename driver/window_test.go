package driver

import (
	"context"
	"testing"
	"time"
)

func TestWindowBoundsWhatIsHeld(t *testing.T) {
	w := newWindow(3)
	ctx := context.Background()
	if n, ok := w.room(ctx); !ok || n != 3 {
		t.Fatalf("room of an empty window = %d, %v; want 3, true", n, ok)
	}
	w.hold(3)
	got := make(chan int, 1)
	go func() {
		n, _ := w.room(ctx)
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("room returned %d while the window was full", n)
	case <-time.After(20 * time.Millisecond):
	}
	w.release()
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("room after one release = %d, want 1", n)
		}
	case <-time.After(time.Second):
		t.Fatal("a release did not wake the waiting room")
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	w.hold(1)
	if _, ok := w.room(ended); ok {
		t.Fatal("room of a full window with an ended context reported ok")
	}
}
