package driver

import (
	"context"
	"sync"
)

// window counts the deliveries a consumer holds, received and not yet
// settled, so that it never holds more than its size. The fetch loop asks for
// room before each Receive; settling a delivery makes room.
type window struct {
	size int

	mu   sync.Mutex
	held int

	freed chan struct{} // a token after a release, to wake a waiting room
}

func newWindow(size int) *window {
	return &window{size: size, freed: make(chan struct{}, 1)}
}

// room waits until the window has room, and returns how much; ok is false
// when ctx ended first.
func (w *window) room(ctx context.Context) (n int, ok bool) {
	for {
		w.mu.Lock()
		n = w.size - w.held
		w.mu.Unlock()
		if n > 0 {
			return n, true
		}
		select {
		case <-w.freed:
		case <-ctx.Done():
			return 0, false
		}
	}
}

// hold records n received deliveries.
func (w *window) hold(n int) {
	w.mu.Lock()
	w.held += n
	w.mu.Unlock()
}

// release records one settled delivery, and wakes room if the window was
// full (room waits only then).
func (w *window) release() {
	w.mu.Lock()
	full := w.held >= w.size
	w.held--
	w.mu.Unlock()
	if !full {
		return
	}
	select {
	case w.freed <- struct{}{}:
	default: // a token is waiting already
	}
}
